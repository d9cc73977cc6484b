// The microVM behind a container: the container's root as an ext4 image,
// the VM's configuration, and starting ember for it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "src/oci/spec.h"

namespace ember::oci {

// Where the guest's parts are. By default beside ember-oci's own binary:
// <dir>/ember, <dir>/guest/vmlinux, <dir>/guest/rootfs.ext4 (the build
// tree's layout); EMBER_OCI_VMM, EMBER_OCI_KERNEL and EMBER_OCI_ROOTFS
// override each.
struct VmAssets {
  std::string vmm;
  std::string kernel;
  std::string rootfs;  // the agent's root file system (read-only)
};
VmAssets FindAssets();

// The guest's view of the container's drive and where the agent mounts it.
inline constexpr char kContainerDevice[] = "/dev/vdb";
inline constexpr char kContainerRootDir[] = "/run/container";

// Bytes `dir` holds (regular files, symlink targets and directories, each
// rounded up to 4 KiB blocks): what an image of it needs before slack.
uint64_t TreeSize(const std::string& dir);

// Makes `image` (ext4, sparse) holding a copy of `dir`, with room to write:
// its size is the tree's plus a quarter plus 64 MiB. mke2fs -d does it
// without a mount; its messages come back in the error.
absl::Status MakeImage(const std::string& dir, const std::string& image);

// The VM's configuration file (Ember's --config-file, Firecracker's
// format): the agent's root read-only, the container's image as the second
// drive (the guest's /dev/vdb), vsock with `uds` as its host socket.
std::string VmConfigJson(const VmAssets& assets, const std::string& image, const std::string& uds,
                         const VmSize& size);

// Starts ember on `config` in `dir` (console to console.log, its log to
// ember.log), with nothing else inherited, and SIGKILL as its parent-death
// signal so that it never outlives the monitor that started it. Returns its
// pid.
absl::StatusOr<pid_t> StartVmm(const VmAssets& assets, const std::string& dir,
                               const std::string& config);

}  // namespace ember::oci
