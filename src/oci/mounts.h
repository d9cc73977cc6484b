// config.json's mounts, as a microVM can have them. The guest is the
// container's boundary and shares no file system with the host, so:
//   - /proc, /sys, /dev and what is under them are the agent's standard
//     set (the guest's own /dev, with its pts and shm), not remade;
//   - kernel file systems elsewhere (tmpfs at /run, say) are mounted by the
//     agent in the guest with the mount's options;
//   - a bind mount's source is copied into the container's image when the
//     container is created (a snapshot of the host's files; volumes.h
//     carries the host's later changes to a read-only directory), under
//     /.ember-binds/<n>, and the agent
//     binds it at its destination with the mount's flags (ro stays
//     read-only), in config.json's order among the other mounts;
//   - anything else (a block device, an overlay, a network file system)
//     is refused at `create`, naming the mount.
// The agent makes every mount from inside the container's root, so a
// symbolic link on the way to a destination resolves there, as in runc.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/agent/protocol.h"
#include "src/oci/spec.h"

namespace ember::oci {

// Where the image holds the bind mounts' copies.
inline constexpr char kBindsDir[] = "/.ember-binds";

struct MountPlan {
  std::vector<agent::MountSpec> guest;  // for the agent, in config.json's order
  struct Copy {
    std::string source;  // on the host, symbolic links resolved
    std::string copy;    // kBindsDir/<n> in the image
  };
  std::vector<Copy> copies;
};

// Whether `path` is `top` or under it (both absolute and clean).
bool Within(const std::string& path, const std::string& top);

absl::StatusOr<MountPlan> PlanMounts(const std::vector<MountEntry>& mounts);

// The bytes the copies add to the image (for its size).
uint64_t CopiesBytes(const MountPlan& plan);

// Copies the sources into the ext4 `image` (made by MakeImage), without
// mounting it: each is read through descriptors that follow no symbolic
// link into `staging` (a directory of our own, removed afterwards), and
// debugfs writes the staged files.
absl::Status ApplyToImage(const MountPlan& plan, const std::string& image,
                          const std::string& staging);

}  // namespace ember::oci
