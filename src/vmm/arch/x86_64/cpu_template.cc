#include "src/vmm/arch/x86_64/cpu_template.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/cpu_state.h"

namespace ember::x86_64 {

absl::StatusOr<CpuidEntries> ApplyCpuidTemplate(const CpuidEntries& supported,
                                               const CpuTemplate& t) {
  CpuidEntries out = supported;
  for (const CpuidLeafModifier& m : t.cpuid_modifiers) {
    auto entry = std::find_if(out.begin(), out.end(), [&](const kvm_cpuid_entry2& e) {
      return e.function == m.leaf && e.index == m.subleaf;
    });
    if (entry == out.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CPU template: CPUID leaf %#x subleaf %#x is not one KVM supports on this host", m.leaf,
          m.subleaf));
    }
    entry->flags = m.flags;
    uint32_t* regs[] = {&entry->eax, &entry->ebx, &entry->ecx, &entry->edx};
    for (const CpuidRegisterModifier& r : m.registers) *regs[r.reg] = r.bits.Apply(*regs[r.reg]);
  }
  // The vendor stays the host's, as in Firecracker: a template cannot make
  // one vendor's CPU pass for another's (and FilterCpuid picks its
  // topology leaves by it).
  for (size_t i = 0; i < out.size(); i++) {
    if (out[i].function == 0 && supported[i].function == 0) {
      out[i].ebx = supported[i].ebx;
      out[i].ecx = supported[i].ecx;
      out[i].edx = supported[i].edx;
    }
  }
  return out;
}

absl::StatusOr<std::vector<kvm_msr_entry>> TemplateMsrs(int vcpu_fd, const CpuTemplate& t) {
  std::vector<uint32_t> indices;  // each once, in order of first mention
  for (const MsrModifier& m : t.msr_modifiers) {
    if (std::find(indices.begin(), indices.end(), m.addr) == indices.end()) {
      indices.push_back(m.addr);
    }
  }
  ASSIGN_OR_RETURN(std::vector<kvm_msr_entry> msrs, ReadMsrs(vcpu_fd, indices));
  if (msrs.size() < indices.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CPU template: MSR %#x is not one KVM can read on this host", indices[msrs.size()]));
  }
  // Modifiers of one MSR apply one after another.
  for (const MsrModifier& m : t.msr_modifiers) {
    size_t i = std::find(indices.begin(), indices.end(), m.addr) - indices.begin();
    msrs[i].data = m.bits.Apply(msrs[i].data);
  }
  return msrs;
}

absl::Status SetTemplateMsrs(const VcpuFd& vcpu, const std::vector<kvm_msr_entry>& msrs) {
  if (msrs.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(int set, vcpu.SetMsrs(msrs));
  if (set != static_cast<int>(msrs.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CPU template: KVM refused MSR %#x = %#x", msrs[set].index, msrs[set].data));
  }
  return absl::OkStatus();
}

absl::Status CheckKvmCapabilities(const Kvm& kvm, const CpuTemplate& t) {
  for (const KvmCapabilityModifier& c : t.kvm_capabilities) {
    const char* required = Kvm::RequiredCapName(c.cap);
    if (c.remove && required != nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cpu-config.kvm_capabilities: Ember cannot run without %s (%d); remove \"!%d\"",
          required, c.cap, c.cap));
    }
    if (!c.remove && kvm.CheckExtension(c.cap) <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cpu-config.kvm_capabilities: the host's KVM lacks capability %d", c.cap));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember::x86_64
