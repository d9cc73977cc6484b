// A CPU template (src/config/cpu_template.h: a custom one, or a static
// one as static_cpu_templates.h gives it) applied to a booting VM, in
// Firecracker's order: the CPUID modifiers change what KVM supports before
// FilterCpuid writes this VM's topology (which wins where both touch a
// bit); the MSR modifiers change what vCPU 0 reads back once its CPUID is
// set, and every vCPU gets the result before the boot MSRs (which win too).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "src/config/cpu_template.h"
#include "src/vmm/kvm.h"

namespace ember::x86_64 {

// Each modified leaf must be in `supported`: a template cannot invent one.
absl::StatusOr<CpuidEntries> ApplyCpuidTemplate(const CpuidEntries& supported,
                                               const CpuTemplate& t);
// The template's MSRs as `vcpu_fd` has them now, modified; each must be
// one KVM can read on this host.
absl::StatusOr<std::vector<kvm_msr_entry>> TemplateMsrs(int vcpu_fd, const CpuTemplate& t);
// Sets them; KVM must take them all.
absl::Status SetTemplateMsrs(const VcpuFd& vcpu, const std::vector<kvm_msr_entry>& msrs);
// Each capability the template adds must be the host's; removing one
// Ember cannot run without is refused (removing any other changes
// nothing: Ember checks only those).
absl::Status CheckKvmCapabilities(const Kvm& kvm, const CpuTemplate& t);

}  // namespace ember::x86_64
