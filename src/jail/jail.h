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
#include "src/jail/args.h"

namespace ember::jail {

// Closes every fd above stderr and empties the environment.
void SanitizeProcess();

// Creates <base>/<exec name>/<id>/root (refusing symlinks on the way) and
// copies the exec file into it (refusing a symlink or hard link there).
absl::Status CreateJail(const JailerArgs& args);

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
absl::Status PivotIntoJail(const std::string& root);

// Inside the jail: /dev, /dev/net and the nodes, and /run for the API
// socket, owned by uid:gid.
absl::Status MakeDevices(const std::vector<DeviceNode>& nodes, uid_t uid, gid_t gid);

// setsid and stdio on `null_fd` (the host's /dev/null, opened earlier).
absl::Status Daemonize(int null_fd);

// No supplementary groups, then gid, then uid, for real, effective and saved.
absl::Status DropPrivileges(uid_t uid, gid_t gid);

}  // namespace ember::jail
