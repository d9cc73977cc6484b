// ember-jailer's command line, Firecracker's jailer's:
//   ember-jailer --id ID --exec-file PATH --uid UID --gid GID
//       [--chroot-base-dir DIR] [--netns PATH] [--cgroup-version 1|2]
//       [--cgroup FILE=VALUE]... [--parent-cgroup NAME]
//       [--resource-limit RESOURCE=VALUE]... [--daemonize] [--new-pid-ns]
//       [-- VMM ARGS...]
//   ember-jailer --help | -h | --version
// As Firecracker's, --help or --version before "--" skips everything else.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::jail {

struct CgroupSetting {
  std::string controller;  // "memory" for memory.limit_in_bytes
  std::string file;
  std::string value;
};

struct JailerArgs {
  bool help = false;     // nothing else is set
  bool version = false;  // nothing else is set
  std::string id;
  // Symlinks resolved (as Firecracker's canonicalize): a regular file.
  std::string exec_file;
  // Its base name, after symlinks: names the jail's directory, the copy in
  // it, the default parent cgroup and the pid file.
  std::string exec_name;
  // 0 is accepted, as Firecracker's jailer does (Kata passes 0); the
  // jailer warns, since the VMM then keeps root's powers in its jail.
  uid_t uid = 0;
  gid_t gid = 0;
  // Symlinks resolved when it exists (/var/run -> /run); made otherwise.
  std::string chroot_base_dir = "/srv/jailer";
  std::string netns;
  int cgroup_version = 1;
  std::vector<CgroupSetting> cgroups;
  std::string parent_cgroup;  // empty: exec_name
  std::vector<std::pair<int, rlim_t>> resource_limits;  // RLIMIT_*, value
  bool daemonize = false;
  bool new_pid_ns = false;
  std::vector<std::string> exec_args;  // after "--"

  // <chroot_base_dir>/<exec_name>/<id>/root
  std::string jail_root() const;
  // "<exec_name>.pid", in the jail root: the VMM's pid on the host.
  std::string pid_file_name() const { return exec_name + ".pid"; }
};

// Checks every value; looks at the file system only to resolve the exec
// file and the chroot base. Errors name the argument.
absl::StatusOr<JailerArgs> ParseJailerArgs(const std::vector<std::string>& args);

extern const char kJailerUsage[];

}  // namespace ember::jail
