// Puts the jailed process in its own cgroup, <mount>/<parent>/<id>, under
// cgroup v1 (one hierarchy per controller) or v2 (the unified one), and
// writes the --cgroup settings there.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "src/jail/args.h"

namespace ember::jail {

// Where the hierarchy for `controller` (v1) or the unified one (v2) is
// mounted, from the text of /proc/mounts.
std::optional<std::string> FindCgroupMount(absl::string_view mounts, int version,
                                           absl::string_view controller);

// Creates the cgroups, writes the settings, then moves `pid` into them.
// With cgroup v2 and no settings, moves `pid` into <mount>/<parent> if
// that exists (Firecracker's rule), else does nothing.
absl::Status JoinCgroups(const JailerArgs& args, pid_t pid);

// A cgroup at `relative` below the mount(s): under v1, in the hierarchy of
// each setting's controller and of each of `also_join` that is mounted;
// under v2, in the unified one with those controllers enabled on the way
// down (the ones the host lacks among `also_join` left out).
struct CgroupPlacement {
  int version = 1;
  std::string relative;
  std::vector<CgroupSetting> settings;
  std::vector<std::string> also_join;
};
absl::Status JoinCgroup(const CgroupPlacement& placement, pid_t pid);
// 1 when v1 hierarchies hold the controllers, 2 for the unified hierarchy
// alone, 0 for none.
int HostCgroupVersion();
// Writes the placement's settings into its cgroup, which JoinCgroup made
// (runc's `update`): nothing is made or joined. The first write the kernel
// refuses (a memory limit below what is in use) ends it with its error.
absl::Status UpdateCgroup(const CgroupPlacement& placement);
// Removes the cgroup `relative` made by JoinCgroup, waiting up to 2 s for
// the processes in it to be gone.
void LeaveCgroup(int version, const std::string& relative,
                 const std::vector<std::string>& controllers);

}  // namespace ember::jail
