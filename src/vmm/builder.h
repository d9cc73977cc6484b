// Makes a Vm: for boot from a configuration, or from a snapshot. Both
// attach the same devices in the same order (drives, root first; network
// interfaces; the balloon), so a snapshot's device states line up.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/config/vm_config.h"
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

// The whole VM, kernel loaded and vCPUs at its entry; nothing runs yet.
// Errors caused by the configuration are InvalidArgument or NotFound and
// name the field or file.
absl::StatusOr<std::unique_ptr<Vm>> BuildForBoot(const VmConfig& config, ConsoleIo io,
                                                  MmdsRefs mmds = {});

// The VM a snapshot describes, `config` being the one it carries; guest
// memory is `mem_fd` mapped private (pages load on first touch). Run it as
// a built VM; Pause first to start it paused. With `uffd_socket`
// (mem_backend Uffd), guest memory is anonymous and a page-fault handler
// listening there fills it (snapshot/uffd.h).
absl::StatusOr<std::unique_ptr<Vm>> BuildFromSnapshot(const VmConfig& config, ConsoleIo io,
                                                      const snapshot::SnapshotState& state,
                                                      int mem_fd,
                                                      const std::string& uffd_socket = "",
                                                      MmdsRefs mmds = {});

}  // namespace ember
