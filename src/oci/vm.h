// The microVM behind a container: the container's root as an ext4 image,
// the VM's configuration, and starting ember for it.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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
  // ember-jailer (<dir>/ember-jailer, EMBER_OCI_JAILER); empty: ember is
  // started directly (EMBER_OCI_JAILER=none).
  std::string jailer;
  uint32_t jail_uid = 65534;  // EMBER_OCI_JAIL_UID / _GID
  uint32_t jail_gid = 65534;
};
VmAssets FindAssets();

// Where one VM runs. Without the jailer, the state directory itself and
// the assets' own paths. With it, Firecracker's layout under
// <root>/jail/ember/<jail id>/root, the assets hard-linked into it (same
// file system; copied otherwise) and every path in the configuration seen
// from inside the jail.
struct VmLayout {
  std::string jail_dir;   // <root>/jail/ember/<jail id>, to remove; "" without a jail
  std::string jail_id;
  std::string chroot_base;
  std::string host_root;  // the jail's root on the host; the state dir without one
  std::string config;     // the configuration file on the host
  std::string config_in_vm;
  std::string uds;        // the vsock socket on the host
  std::string image;      // the container's image on the host
};
// Makes the jail's directory and links the kernel and agent root into it.
absl::StatusOr<VmLayout> PrepareLayout(const VmAssets& assets, const std::string& root,
                                       const std::string& id, const std::string& state_dir);
// The jail's id for a container: 1-64 letters, digits, '-' (the jailer's
// rule), stable for (root, id).
std::string JailId(const std::string& root, const std::string& id);

// The VM's network interface's id (its TAP is the container's, network.h).
inline constexpr char kGuestInterface[] = "eth0";

// The guest's view of the container's drive and where the agent mounts it.
inline constexpr char kContainerDevice[] = "/dev/vdb";
inline constexpr char kContainerRootDir[] = "/run/container";

// Bytes `dir` (or a single file) holds (regular files, symlink targets and
// directories, each rounded up to 4 KiB blocks): what an image of it
// needs before slack.
uint64_t TreeSize(const std::string& dir);

// Makes `image` (ext4, sparse) holding a copy of `dir`, with room to write:
// its size is the tree's and `extra_bytes` plus a quarter plus 64 MiB.
// mke2fs -d does it without a mount; its messages come back in the error.
absl::Status MakeImage(const std::string& dir, const std::string& image,
                       uint64_t extra_bytes = 0);

// Runs argv (searched in PATH) with stdin from /dev/null, its stdout and
// stderr together into *output; an error unless it exits 0.
absl::Status RunTool(const std::vector<std::string>& argv, std::string* output);

// The VM's configuration file (Ember's --config-file, Firecracker's
// format): the agent's root read-only, the container's image as the second
// drive (the guest's /dev/vdb), vsock with `uds` as its host socket, and
// with a `tap` the network interface eth0 on it (network.h).
// `kernel`, `rootfs`, `image`, `uds` as the VMM sees them.
std::string VmConfigJson(const std::string& kernel, const std::string& rootfs,
                         const std::string& image, const std::string& uds, const VmSize& size,
                         const std::string& tap = "");

// Where a jail for container `id` under `root` is (PrepareLayout makes
// it), or "" without the jailer; and its removal, with its parents once
// they are empty.
std::string JailDir(const VmAssets& assets, const std::string& root, const std::string& id);
void RemoveJailDir(const std::string& jail_dir);

// The VMM's API socket on the host: in the root of the jail at `jail_dir`,
// or in `dir` (the container's state directory) without a jail.
std::string ApiSocket(const std::string& jail_dir, const std::string& dir);

// Starts ember on the layout's configuration (console to <dir>/console.log,
// its log to <dir>/ember.log), with nothing else inherited: through
// ember-jailer (which execs ember in the same process, seccomp on, as
// jail_uid:jail_gid) or directly. SIGKILL is its parent-death signal, so
// that it never outlives the monitor that started it (the jailer's change
// of user clears that: then `delete` stops it). Returns its pid.
// `api_in_vm`: the API socket as the VMM sees it, or "" for --no-api;
// `config_in_vm` "" starts it without a configuration (to load a snapshot).
absl::StatusOr<pid_t> StartVmm(const VmAssets& assets, const VmLayout& layout,
                               const std::string& dir, const std::string& api_in_vm = "",
                               const std::string& config_in_vm = "-");

// Waits until the guest's console (the file ember writes it to) shows
// `text`; false on timeout or when `gave_up` says so. Ember's guests print
// "EMBER-SHELL-READY" when their init has started its last program: from
// then on nothing else execs in the guest, so the container's process
// does not share the emulated guest of a PVM host with init's start-up.
inline constexpr char kGuestSettled[] = "EMBER-SHELL-READY";
bool WaitForConsole(const std::string& path, const std::string& text, double timeout_s,
                    const std::function<bool()>& gave_up);

// mkdir -p.
absl::Status MakeDirs(const std::string& path, mode_t mode);

// A hard link, or a copy when `from` is on another file system; an
// existing `to` is replaced.
absl::Status LinkOrCopy(const std::string& from, const std::string& to);

// Removes `path` and everything below it, following no symbolic link; what
// cannot be removed stays.
void RemoveTree(const std::string& path);

}  // namespace ember::oci
