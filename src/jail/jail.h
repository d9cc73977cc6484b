// src/jail is ember-jailer: it builds the jail and execs the VMM in it. It
// may use src/common only.
//
// The steps of putting a VMM in its jail, in the order ember-jailer runs
// them (jailer_main.cc). Each returns an error naming what failed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/jail/args.h"

namespace ember::jail {

// Closes every fd above stderr and empties the environment.
void SanitizeProcess();

// The jail's directories, held open from the walk that made them: what
// follows works on these, never on the path again.
struct JailDirs {
  UniqueFd id_dir;  // <base>/<exec name>/<id>
  UniqueFd root;    // <base>/<exec name>/<id>/root
};

// Walks <base>/<exec name>/<id>/root from / one component at a time with
// openat(O_NOFOLLOW | O_DIRECTORY), making a missing one (mkdirat, 0755).
// Every directory on the way must be a real directory owned by root (the
// jailer) and not writable by group or others unless sticky (as /tmp):
// otherwise another user could swap a component for a symlink while the
// jail is built. `root` may also belong to uid:gid (an earlier jail with
// this id). Copies the exec file into root (refusing a symlink or hard
// link there) and gives root to uid:gid.
absl::StatusOr<JailDirs> CreateJail(const JailerArgs& args);

// setns into the network namespace at `path`.
absl::Status JoinNetns(const std::string& path);

absl::Status SetResourceLimits(const JailerArgs& args);

// A device node the jail gets: the host's major/minor, owned by uid:gid.
struct DeviceNode {
  std::string path;  // "/dev/kvm"
  dev_t rdev;
  bool required;
};
// The host's /dev/kvm, /dev/net/tun, /dev/urandom and /dev/userfaultfd
// (where the host has it). Read before the jail hides the host's /dev.
absl::StatusOr<std::vector<DeviceNode>> HostDevices();

// New mount namespace, pivot_root into the jail root, host tree detached.
absl::Status PivotIntoJail(const JailDirs& jail);

// Inside the jail: /dev, /dev/net and the nodes, and /run for the API
// socket, owned by uid:gid; made through directory fds, refusing symlinks.
absl::Status MakeDevices(const std::vector<DeviceNode>& nodes, uid_t uid, gid_t gid);

// Stdio on `null_fd` (the host's /dev/null, opened before the jail hid it).
absl::Status StdioToNull(int null_fd);

// Writes `pid` as Firecracker's jailer does (decimal, no newline) to
// `name` in `dir`, replacing a file an earlier VMM of this jail left;
// never through a symlink.
absl::Status WritePidFile(int dir, const std::string& name, pid_t pid);

// No supplementary groups, then gid, then uid, for real, effective and saved.
absl::Status DropPrivileges(uid_t uid, gid_t gid);

}  // namespace ember::jail
