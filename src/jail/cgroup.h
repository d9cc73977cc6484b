// Puts the jailed process in its own cgroup, <mount>/<parent>/<id>, under
// cgroup v1 (one hierarchy per controller) or v2 (the unified one), and
// writes the --cgroup settings there.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

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

}  // namespace ember::jail
