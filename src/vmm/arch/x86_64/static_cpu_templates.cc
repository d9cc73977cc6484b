#include "src/vmm/arch/x86_64/static_cpu_templates.h"

#include <cpuid.h>

#include <cstring>
#include <span>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::x86_64 {
namespace {

enum Reg { EAX, EBX, ECX, EDX };

// One register's forced bits: where `filter` has a 1, the bit becomes the
// one in `value`. `flags` is KVM's for the leaf (1: indexed by subleaf).
struct CpuidBits {
  uint32_t leaf, subleaf, flags;
  Reg reg;
  uint32_t filter, value;
};

struct MsrBits {
  uint32_t addr;
  uint64_t filter, value;
};

struct KnownModel {
  const char* name;
  const char* vendor;
  uint32_t signature;
};

constexpr KnownModel kSkylake = {"Skylake", "GenuineIntel", 0x50654};
constexpr KnownModel kCascadeLake = {"Cascade Lake", "GenuineIntel", 0x50657};
constexpr KnownModel kIceLake = {"Ice Lake", "GenuineIntel", 0x606a6};
constexpr KnownModel kMilan = {"Milan", "AuthenticAMD", 0xa00f11};

// Leaves 1 and 7 hide what the instance type's CPU lacks (AVX-512,
// SGX, TSX, PKU, ...) and give its family, model and stepping; 0xd hides
// the XSAVE state of the hidden features; 0x80000001 and 0x80000008 hide
// extended ones. Firecracker's tests/data/custom_cpu_templates/ has the
// same bits as custom templates.
constexpr CpuidBits kC3Cpuid[] = {
    {0x1, 0, 0, EAX, 0x0fff3fff, 0x000306e4},  // Ivy Bridge-EP
    {0x1, 0, 0, ECX, 0x0040dd3c, 0},
    {0x1, 0, 0, EDX, 0xa8641080, 0x00001080},
    {0x7, 0, 1, EBX, 0xffafdd3c, 0},
    {0x7, 0, 1, ECX, 0x4041481e, 0},
    {0x7, 0, 1, EDX, 0x0000000c, 0},
    {0xd, 0, 1, EAX, 0x000002f8, 0},
    {0xd, 1, 1, EAX, 0x0000000e, 0},
    {0x80000001, 0, 0, ECX, 0x00000120, 0},
    {0x80000001, 0, 0, EDX, 0x04000000, 0},
};

// T2, T2S, T2CL and T2A share these; their CPUID differs in 0x80000001
// and 0x80000008 only (T2S is T2 with IA32_ARCH_CAPABILITIES fixed).
constexpr CpuidBits kT2CommonCpuid[] = {
    {0x1, 0, 0, EAX, 0x0fff3fff, 0x000306f2},  // Haswell-EP
    {0x1, 0, 0, ECX, 0x0004cdfc, 0},
    {0x1, 0, 0, EDX, 0xe8641080, 0x00001080},
    {0x7, 0, 1, EBX, 0xffefda14, 0x00000200},
    {0x7, 0, 1, ECX, 0x40415f5e, 0},
    {0x7, 0, 1, EDX, 0x0000011c, 0},
    {0xd, 0, 1, EAX, 0x000002f8, 0},
    {0xd, 1, 1, EAX, 0x0000000e, 0},
};

constexpr CpuidBits kT2Extended[] = {
    {0x80000001, 0, 0, ECX, 0x20000100, 0},
    {0x80000001, 0, 0, EDX, 0x04000000, 0},
    {0x80000008, 0, 0, EBX, 0x00000200, 0},
};

constexpr CpuidBits kT2clExtended[] = {
    {0x80000001, 0, 0, ECX, 0x200001c0, 0},
    {0x80000001, 0, 0, EDX, 0x07c00000, 0},
    {0x80000008, 0, 0, EBX, 0x00000200, 0},
};

// A Milan host shown with T2CL's instruction set, so guests can move
// between the two.
constexpr CpuidBits kT2aExtended[] = {
    {0x80000001, 0, 0, ECX, 0x200001c4, 0},
    {0x80000001, 0, 0, EDX, 0x06400000, 0},
    {0x80000008, 0, 0, EBX, 0x001c0205, 0x001c0004},
};

// IA32_ARCH_CAPABILITIES. T2S gives every host the same value, that of
// the most vulnerable model it runs on, so that guests can move between
// them; T2CL only hides what KVM cannot pass through and keeps the host's
// mitigation bits.
constexpr MsrBits kT2sMsrs[] = {{0x10a, ~uint64_t{0}, 0x0c0a0c4c}};
constexpr MsrBits kT2clMsrs[] = {{0x10a, 0xffffffffe2f51e00, 0}};

void Add(CpuTemplate& t, std::span<const CpuidBits> bits) {
  for (const CpuidBits& b : bits) {
    if (t.cpuid_modifiers.empty() || t.cpuid_modifiers.back().leaf != b.leaf ||
        t.cpuid_modifiers.back().subleaf != b.subleaf) {
      t.cpuid_modifiers.push_back({b.leaf, b.subleaf, b.flags, {}});
    }
    t.cpuid_modifiers.back().registers.push_back({b.reg, {b.filter, b.value}});
  }
}

void Add(CpuTemplate& t, std::span<const MsrBits> bits) {
  for (const MsrBits& b : bits) t.msr_modifiers.push_back({b.addr, {b.filter, b.value}});
}

std::vector<KnownModel> ModelsFor(StaticCpuTemplate t) {
  switch (t) {
    case StaticCpuTemplate::kC3:
    case StaticCpuTemplate::kT2:
      return {kSkylake, kCascadeLake, kIceLake};
    case StaticCpuTemplate::kT2S:
      return {kSkylake, kCascadeLake};
    case StaticCpuTemplate::kT2CL:
      return {kCascadeLake, kIceLake};
    case StaticCpuTemplate::kT2A:
      return {kMilan};
    case StaticCpuTemplate::kNone:
      break;
  }
  return {};
}

// As Linux prints it: family and model with their extensions folded in.
std::string Describe(const std::string& vendor, uint32_t sig) {
  uint32_t family = (sig >> 8) & 0xf;
  uint32_t model = (sig >> 4) & 0xf;
  if (family == 0xf) family += (sig >> 20) & 0xff;
  if (family == 0x6 || family >= 0xf) model |= ((sig >> 16) & 0xf) << 4;
  return absl::StrFormat("%s family %#x model %#x stepping %d", vendor, family, model, sig & 0xf);
}

}  // namespace

CpuModel HostCpuModel() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  __cpuid(0, eax, ebx, ecx, edx);
  char vendor[12];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  CpuModel host{std::string(vendor, sizeof(vendor)), 0};
  __cpuid(1, eax, ebx, ecx, edx);
  host.signature = SignatureOf(eax);
  return host;
}

uint32_t SignatureOf(uint32_t leaf1_eax) { return leaf1_eax & 0x0fff0fff; }

CpuTemplate StaticTemplate(StaticCpuTemplate t) {
  CpuTemplate out;
  switch (t) {
    case StaticCpuTemplate::kC3:
      Add(out, kC3Cpuid);
      break;
    case StaticCpuTemplate::kT2:
      Add(out, kT2CommonCpuid);
      Add(out, kT2Extended);
      break;
    case StaticCpuTemplate::kT2S:
      Add(out, kT2CommonCpuid);
      Add(out, kT2Extended);
      Add(out, kT2sMsrs);
      break;
    case StaticCpuTemplate::kT2CL:
      Add(out, kT2CommonCpuid);
      Add(out, kT2clExtended);
      Add(out, kT2clMsrs);
      break;
    case StaticCpuTemplate::kT2A:
      Add(out, kT2CommonCpuid);
      Add(out, kT2aExtended);
      break;
    case StaticCpuTemplate::kNone:
      break;
  }
  return out;
}

absl::Status CheckStaticTemplateHost(StaticCpuTemplate t, const CpuModel& host) {
  std::vector<KnownModel> models = ModelsFor(t);
  std::vector<std::string> names;
  for (const KnownModel& m : models) {
    if (host.vendor == m.vendor && host.signature == m.signature) return absl::OkStatus();
    names.push_back(absl::StrFormat("%s (%s)", m.name, Describe(m.vendor, m.signature)));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "machine-config.cpu_template \"%s\" is made for %s only; this host is %s. Use \"None\", "
      "or give the bits you need as a custom template (PUT /cpu-config)",
      StaticCpuTemplateName(t), absl::StrJoin(names, ", "),
      Describe(host.vendor, host.signature)));
}

absl::StatusOr<CpuTemplate> StaticTemplateFor(StaticCpuTemplate t, const CpuModel& host) {
  RETURN_IF_ERROR(CheckStaticTemplateHost(t, host));
  if (t == StaticCpuTemplate::kC3 && host.signature == kSkylake.signature) {
    LOG_WARN("machine-config.cpu_template C3 on Skylake: this CPU enumerates no FBSDP_NO, "
             "PSDP_NO or SBDR_SSDP_NO in IA32_ARCH_CAPABILITIES, and the guest kernel then does "
             "not apply its MMIO stale data mitigation");
  }
  return StaticTemplate(t);
}

}  // namespace ember::x86_64
