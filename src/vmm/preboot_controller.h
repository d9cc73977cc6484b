// The API's actions before InstanceStart: they edit the microVM's
// configuration under Firecracker's rules and touch no KVM, so this half
// of the controller is plain code, unit-tested without a VM. What needs a
// running microVM is refused here; runtime_controller.h does it after the
// start.
#pragma once

#include <utility>

#include "absl/status/statusor.h"
#include "src/config/vm_config.h"
#include "src/vmm/vmm_action.h"

namespace ember {

class PreBootController {
 public:
  explicit PreBootController(VmConfig config) : config_(std::move(config)) {}

  // Configuration actions; InstanceStart, LoadSnapshot, the logger and
  // metrics are the Controller's own (they act outside the configuration).
  absl::StatusOr<VmmResult> Handle(const VmmAction& action);

  const VmConfig& config() const { return config_; }
  VmConfig& config() { return config_; }

 private:
  absl::StatusOr<VmmResult> Do(const GetVmConfig&) { return config_; }
  absl::StatusOr<VmmResult> Do(const GetMachineConfig&) { return config_.machine; }
  absl::StatusOr<VmmResult> Do(const PutMachineConfig& a);
  absl::StatusOr<VmmResult> Do(const PatchMachineConfig& a);
  absl::StatusOr<VmmResult> Do(const PutBootSource& a);
  absl::StatusOr<VmmResult> Do(const PutDrive& a);
  absl::StatusOr<VmmResult> Do(const PatchDrive& a);
  absl::StatusOr<VmmResult> Do(const PutNetworkInterface& a);
  absl::StatusOr<VmmResult> Do(const PatchNetworkInterface& a);
  absl::StatusOr<VmmResult> Do(const PutBalloon& a);
  absl::StatusOr<VmmResult> Do(const PatchBalloon& a);
  absl::StatusOr<VmmResult> Do(const GetBalloon&);
  absl::StatusOr<VmmResult> Do(const PatchBalloonStats& a);
  absl::StatusOr<VmmResult> Do(const PutSerial& a);
  absl::StatusOr<VmmResult> Do(const PutVsock& a);
  absl::StatusOr<VmmResult> Do(const PutEntropy& a);
  absl::StatusOr<VmmResult> Do(const GetBalloonStats&);
  // The rest need a running microVM.
  template <typename A>
  absl::StatusOr<VmmResult> Do(const A&) {
    return absl::FailedPreconditionError("the microVM has not started yet");
  }

  VmConfig config_;
};

}  // namespace ember
