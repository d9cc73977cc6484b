// The API's actions on a running microVM (VMM thread): pause and resume,
// the balloon's target and statistics, a drive's backing file,
// Ctrl-Alt-Del and snapshots. It keeps the configuration up to date with
// what it changes; configuration that only the boot reads is refused.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "src/config/vm_config.h"
#include "src/vmm/vm.h"
#include "src/vmm/vmm_action.h"

namespace ember {

// Firecracker's answer to what only a microVM not yet started takes; ours
// goes on to say what the client can do instead.
inline constexpr char kNotSupportedPostBoot[] =
    "The requested operation is not supported after starting the microVM.";

class RuntimeController {
 public:
  // How a snapshot carries the configuration (the API's JSON in production).
  using ConfigToJson = std::function<std::string(const VmConfig&)>;

  // `config` (the Controller's) must outlive this.
  RuntimeController(VmConfig& config, std::unique_ptr<Vm> vm, ConfigToJson to_json)
      : config_(config), vm_(std::move(vm)), to_json_(std::move(to_json)) {}

  absl::StatusOr<VmmResult> Handle(const VmmAction& action);

  Vm& vm() { return *vm_; }
  const Vm& vm() const { return *vm_; }
  // The VM runs again: a balloon's hinting run ends (BalloonDevice::Resumed).
  void BalloonResumed();

 private:
  absl::StatusOr<VmmResult> Do(const GetVmConfig&) { return config_; }
  absl::StatusOr<VmmResult> Do(const GetMachineConfig&) { return config_.machine; }
  absl::StatusOr<VmmResult> Do(const PatchDrive& a);
  absl::StatusOr<VmmResult> Do(const PatchPmem& a);
  absl::StatusOr<VmmResult> Do(const PatchMemoryHotplug& a);
  absl::StatusOr<VmmResult> Do(const GetMemoryHotplug&);
  absl::StatusOr<VmmResult> Do(const PatchNetworkInterface& a);
  absl::StatusOr<VmmResult> Do(const PatchBalloon& a);
  absl::StatusOr<VmmResult> Do(const GetBalloon&);
  absl::StatusOr<VmmResult> Do(const GetBalloonStats&);
  absl::StatusOr<VmmResult> Do(const PatchBalloonStats& a);
  absl::StatusOr<VmmResult> Do(const StartBalloonHinting& a);
  absl::StatusOr<VmmResult> Do(const StopBalloonHinting&);
  absl::StatusOr<VmmResult> Do(const GetBalloonHintingStatus&);
  absl::StatusOr<VmmResult> Do(const SendCtrlAltDel&);
  absl::StatusOr<VmmResult> Do(const PatchVmState& a);
  absl::StatusOr<VmmResult> Do(const CreateSnapshot& a);
  absl::StatusOr<VmmResult> Do(const RecordWorkingSet& a);  // controller_snapshot.cc
  absl::StatusOr<VmmResult> Do(const InstanceStart&) {
    return absl::FailedPreconditionError(
        absl::StrCat(kNotSupportedPostBoot, " The microVM is already running."));
  }
  absl::StatusOr<VmmResult> Do(const LoadSnapshot&) {
    return absl::FailedPreconditionError(absl::StrCat(
        kNotSupportedPostBoot, " A snapshot is loaded before the microVM starts, into a new Ember."));
  }
  // Configuration the boot has read (A::kWhat names it).
  template <typename A>
  absl::StatusOr<VmmResult> Do(const A&) {
    if constexpr (requires { A::kWhat; }) {
      return absl::FailedPreconditionError(absl::StrCat(
          kNotSupportedPostBoot, " Set ", A::kWhat, " before the microVM starts."));
    } else {
      return absl::InternalError("the Controller handles this action itself");
    }
  }

  VmConfig& config_;
  std::unique_ptr<Vm> vm_;
  ConfigToJson to_json_;
};

}  // namespace ember
