#include "src/vmm/vm_config.h"

#include "absl/strings/str_format.h"

namespace ember {

absl::Status ValidateMachineConfig(const MachineConfig& m) {
  if (m.vcpu_count < kMinVcpus || m.vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "machine-config.vcpu_count must be between %d and %d, got %d", kMinVcpus, kMaxVcpus,
        m.vcpu_count));
  }
  if (m.mem_size_mib == 0) {
    return absl::InvalidArgumentError("machine-config.mem_size_mib must be at least 1");
  }
  return absl::OkStatus();
}

}  // namespace ember
