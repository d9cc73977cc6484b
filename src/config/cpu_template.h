// A custom CPU template (PUT /cpu-config, the config file's "cpu-config"),
// Firecracker's x86_64 format: CPUID and MSR bits the guest sees forced to
// 0 or 1, and KVM capabilities the host must have. Applied to what KVM
// supports before Ember writes its topology into CPUID, so that topology
// wins where both touch the same bits (src/vmm/arch/x86_64/cpu_template.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember {

// Bits of a register to force: where `filter` has a 1, the bit becomes
// the one in `value`; the rest keep theirs.
template <typename T>
struct BitFilter {
  T filter = 0;
  T value = 0;
  T Apply(T in) const { return (in & ~filter) | value; }
  friend bool operator==(const BitFilter&, const BitFilter&) = default;
};

struct CpuidRegisterModifier {
  int reg = 0;  // 0..3: eax, ebx, ecx, edx
  BitFilter<uint32_t> bits;
  friend bool operator==(const CpuidRegisterModifier&, const CpuidRegisterModifier&) = default;
};

struct CpuidLeafModifier {
  uint32_t leaf = 0;
  uint32_t subleaf = 0;
  uint32_t flags = 0;  // KVM's flags for the entry (KVM_CPUID_FLAG_*)
  std::vector<CpuidRegisterModifier> registers;
  friend bool operator==(const CpuidLeafModifier&, const CpuidLeafModifier&) = default;
};

struct MsrModifier {
  uint32_t addr = 0;
  BitFilter<uint64_t> bits;
  friend bool operator==(const MsrModifier&, const MsrModifier&) = default;
};

// "N" requires capability N of the host's KVM; "!N" drops N from the
// capabilities checked.
struct KvmCapabilityModifier {
  uint32_t cap = 0;
  bool remove = false;
  friend bool operator==(const KvmCapabilityModifier&, const KvmCapabilityModifier&) = default;
};

// Firecracker's static templates (machine-config.cpu_template): built-in
// CpuTemplates for the EC2 instance types they are named after, each for
// the host CPU models it was made for (src/vmm/arch/x86_64/static_cpu_templates.h).
enum class StaticCpuTemplate { kNone, kC3, kT2, kT2S, kT2CL, kT2A };

// "None", "C3", "T2", "T2S", "T2CL" or "T2A", as in the API.
const char* StaticCpuTemplateName(StaticCpuTemplate t);
std::optional<StaticCpuTemplate> ParseStaticCpuTemplate(const std::string& name);

struct CpuTemplate {
  std::vector<KvmCapabilityModifier> kvm_capabilities;
  std::vector<CpuidLeafModifier> cpuid_modifiers;
  std::vector<MsrModifier> msr_modifiers;
  friend bool operator==(const CpuTemplate&, const CpuTemplate&) = default;
};

// Firecracker's bitmap strings: "0b" then up to `bits` of '0', '1' or 'x'
// (keep), most significant first, '_' ignored; missing leading bits are
// 'x'. `what` names the field in the message.
absl::StatusOr<BitFilter<uint64_t>> ParseBitmap(const std::string& text, int bits,
                                               const std::string& what);
// The reverse, always `bits` long.
std::string BitmapString(const BitFilter<uint64_t>& bits, int width);
// A leaf, subleaf or MSR address: "0x" hex, "0b" binary or decimal.
absl::StatusOr<uint32_t> ParseRegisterNumber(const std::string& text, const std::string& what);

}  // namespace ember
