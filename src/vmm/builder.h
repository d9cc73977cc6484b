// Makes a Vm: for boot from a configuration, or from a snapshot. Both
// attach the same devices in the same order (drives, root first; network
// interfaces; the balloon), so a snapshot's device states line up.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/net/tap.h"
#include "src/mmds/data_store.h"
#include "src/mmds/metrics.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/vm.h"

namespace ember {

// What the network interfaces named in the configuration's mmds-config
// reach MMDS through; both outlive the Vm. Without a store no interface
// reaches MMDS.
struct MmdsRefs {
  mmds::DataStore* store = nullptr;
  mmds::MmdsMetrics* metrics = nullptr;
};

// The part of a boot that need not wait for InstanceStart: the KVM VM
// with its memory, the kernel and initrd loaded into it (most of the
// start's time) and the vCPUs at its entry. Made as soon as the configuration names a kernel; used by
// BuildForBoot only while nothing it was made from has changed.
class PreparedVm {
 public:
  // In `*shell` if it holds one (vm.h's VmShell), taken only when the VM
  // is made: a configuration refused before that leaves it there.
  static absl::StatusOr<PreparedVm> Prepare(const VmConfig& config,
                                            std::optional<VmShell>* shell = nullptr);

  // Whether `config` would prepare this same VM: the same machine
  // configuration, the same kernel and initrd paths, and those files not
  // renamed over or rewritten since they were read.
  bool Matches(const VmConfig& config) const;
  // Vm::CopyBrokenLeases while the VM waits for InstanceStart; false if
  // a copy failed (the VM must go).
  bool CopyBrokenLeases() { return vm_->CopyBrokenLeases(); }

 private:
  friend absl::StatusOr<std::unique_ptr<Vm>> BuildForBoot(const VmConfig&, ConsoleIo, MmdsRefs,
                                                          std::optional<PreparedVm>,
                                                          const std::map<std::string, virtio::net::Tap>*);
  PreparedVm(std::unique_ptr<Vm> vm, LoadedImages images, MachineConfig machine,
             std::optional<CpuTemplate> cpu_config, BootSourceConfig boot)
      : vm_(std::move(vm)), images_(std::move(images)), machine_(machine),
        cpu_config_(std::move(cpu_config)), boot_(std::move(boot)) {}

  std::unique_ptr<Vm> vm_;
  LoadedImages images_;
  MachineConfig machine_;
  std::optional<CpuTemplate> cpu_config_;  // set in its vCPUs' CPUID and MSRs
  BootSourceConfig boot_;
};

// The whole VM, kernel loaded and vCPUs at its entry; nothing runs yet.
// Starts from `prepared` if it still matches `config`, else prepares anew.
// Errors caused by the configuration are InvalidArgument or NotFound and
// name the field or file.
// `taps` are the interfaces' TAPs opened when they were configured, by
// interface id; the builder opens the rest.
// The devices get duplicates, so the caller still holds them all after a
// failed start.
using OpenTaps = std::map<std::string, virtio::net::Tap>;
absl::StatusOr<std::unique_ptr<Vm>> BuildForBoot(const VmConfig& config, ConsoleIo io,
                                                  MmdsRefs mmds = {},
                                                  std::optional<PreparedVm> prepared = {},
                                                  const OpenTaps* taps = nullptr);

// The VM a snapshot describes, `config` being the one it carries; guest
// memory is `mem_fd` mapped private (pages load on first touch). Run it as
// a built VM; Pause first to start it paused. With `uffd_socket`
// (mem_backend Uffd), guest memory is anonymous and a page-fault handler
// listening there fills it (snapshot/uffd.h). Built in `*shell` as Prepare.
absl::StatusOr<std::unique_ptr<Vm>> BuildFromSnapshot(const VmConfig& config, ConsoleIo io,
                                                      const snapshot::SnapshotState& state,
                                                      int mem_fd,
                                                      const std::string& uffd_socket = "",
                                                      MmdsRefs mmds = {},
                                                      std::optional<VmShell>* shell = nullptr);

}  // namespace ember
