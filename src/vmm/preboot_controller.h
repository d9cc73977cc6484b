// The API's actions before InstanceStart: they edit the microVM's
// configuration under Firecracker's rules and touch no KVM, so this half
// of the controller is plain code, unit-tested without a VM. What needs a
// running microVM is refused here; runtime_controller.h does it after the
// start.
#pragma once

#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "src/common/status_macros.h"
#include "src/config/vm_config.h"
#include "src/vmm/arch/x86_64/static_cpu_templates.h"
#include "src/vmm/vmm_action.h"

namespace ember {

// Firecracker's answer to an action that needs a running microVM.
inline constexpr char kNotSupportedPreBoot[] =
    "The requested operation is not supported before starting the microVM.";

// What Firecracker checks of a configuration when it is given, beyond its
// form: the kernel, initrd and drive files open (a drive read-write unless
// read-only), and no guest MAC is on two interfaces. The config file is
// checked whole; each PUT checks its own part.
absl::Status CheckBootSourceFiles(const BootSourceConfig& boot);
absl::Status CheckDriveFile(const DriveConfig& drive);
absl::Status CheckHostResources(const VmConfig& config);

class PreBootController {
 public:
  explicit PreBootController(VmConfig config) : config_(std::move(config)) {}

  // Configuration actions; InstanceStart, LoadSnapshot, the logger and
  // metrics are the Controller's own (they act outside the configuration).
  absl::StatusOr<VmmResult> Handle(const VmmAction& action);

  // What a PUT of `iface` would be refused for, checked before its TAP is
  // opened (Firecracker checks the MAC first too).
  absl::Status CheckNetworkInterface(const NetConfig& iface) const;

  const VmConfig& config() const { return config_; }
  VmConfig& config() { return config_; }
  // Whether a PUT or PATCH of machine-config has been taken (a snapshot is
  // then refused, as by Firecracker).
  bool machine_configured() const { return machine_configured_; }
  // The CPU a static template must be made for: the host's unless set
  // (read when first needed: CPUID traps on a virtualised host).
  void set_host_cpu(x86_64::CpuModel cpu) { host_cpu_ = std::move(cpu); }

 private:
  absl::StatusOr<VmmResult> Do(const GetVmConfig&) { return config_; }
  absl::StatusOr<VmmResult> Do(const GetMachineConfig&) { return config_.machine; }
  absl::StatusOr<VmmResult> Do(const PutMachineConfig& a);
  absl::StatusOr<VmmResult> Do(const PatchMachineConfig& a);
  absl::StatusOr<VmmResult> Do(const PutBootSource& a);
  absl::StatusOr<VmmResult> Do(const PutDrive& a);
  absl::StatusOr<VmmResult> Do(const PutNetworkInterface& a);
  absl::StatusOr<VmmResult> Do(const PutBalloon& a);
  absl::StatusOr<VmmResult> Do(const GetBalloon&);
  absl::StatusOr<VmmResult> Do(const PutSerial& a);
  absl::StatusOr<VmmResult> Do(const PutVsock& a);
  absl::StatusOr<VmmResult> Do(const PutEntropy& a);
  absl::StatusOr<VmmResult> Do(const PutPmem& a);
  absl::StatusOr<VmmResult> Do(const PutMemoryHotplug& a) {
    RETURN_IF_ERROR(ValidateMemoryHotplug(a.config));
    config_.memory_hotplug = a.config;
    return std::monostate();
  }
  absl::StatusOr<VmmResult> Do(const PutCpuConfig& a) {
    // It replaces a static template (machine-config's), even when empty.
    config_.machine.cpu_template = StaticCpuTemplate::kNone;
    // An empty template changes nothing: it is none (GET /vm/config null).
    if (a.config == CpuTemplate{}) {
      config_.cpu_config.reset();
    } else {
      config_.cpu_config = a.config;
    }
    return std::monostate();
  }
  absl::StatusOr<VmmResult> Do(const PutMmdsConfig& a);
  // The rest need a running microVM, PATCHes of devices included: before
  // the start Firecracker takes a PUT of the whole device instead.
  template <typename A>
  absl::StatusOr<VmmResult> Do(const A&) {
    return absl::FailedPreconditionError(kNotSupportedPreBoot);
  }

  absl::Status CheckMachine(const MachineConfig& m);

  VmConfig config_;
  bool machine_configured_ = false;
  std::optional<x86_64::CpuModel> host_cpu_;
};

}  // namespace ember
