// ember-jailer's command line, Firecracker's jailer's:
//   ember-jailer --id ID --exec-file PATH --uid UID --gid GID
//       [--chroot-base-dir DIR] [--netns PATH] [--cgroup-version 1|2]
//       [--cgroup FILE=VALUE]... [--parent-cgroup NAME]
//       [--resource-limit RESOURCE=VALUE]... [--daemonize] [--new-pid-ns]
//       [-- VMM ARGS...]
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
  std::string id;
  std::string exec_file;  // absolute, a regular file
  std::string exec_name;  // its base name
  uid_t uid = 0;
  gid_t gid = 0;
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
};

// Checks every value; does not look at the file system beyond the exec
// file. Errors name the argument.
absl::StatusOr<JailerArgs> ParseJailerArgs(const std::vector<std::string>& args);

extern const char kJailerUsage[];

}  // namespace ember::jail
