// Firecracker's static CPU templates (machine-config.cpu_template) as
// CpuTemplates. Each hides the features of newer CPUs so that guests see
// one EC2 instance type's CPU on any host it was made for; like
// Firecracker, Ember applies one only on those host models, so that a
// newer CPU's features the template does not know of cannot show through.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "src/config/cpu_template.h"

namespace ember::x86_64 {

// A CPU as CPUID leaves 0 and 1 give it.
struct CpuModel {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD"
  uint32_t signature = 0;  // leaf 1 EAX: stepping, model, family and their extensions
  friend bool operator==(const CpuModel&, const CpuModel&) = default;
};

CpuModel HostCpuModel();
// CPUID.1:EAX as a model's signature: without the processor type and
// reserved bits, as Firecracker compares them.
uint32_t SignatureOf(uint32_t leaf1_eax);

// `t` (not kNone) as a custom template would give it.
CpuTemplate StaticTemplate(StaticCpuTemplate t);
// Refuses a host `t` was not made for, naming the models it was.
absl::Status CheckStaticTemplateHost(StaticCpuTemplate t, const CpuModel& host);
// `t` for a VM on `host`, checked, with Firecracker's warning where the
// template weakens the guest's mitigations.
absl::StatusOr<CpuTemplate> StaticTemplateFor(StaticCpuTemplate t, const CpuModel& host);

}  // namespace ember::x86_64
