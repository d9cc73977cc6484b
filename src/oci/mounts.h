// config.json's mounts, as a microVM can have them. The guest is the
// container's boundary and shares no file system with the host, so:
//   - /proc, /sys, /dev and what is under them are the agent's standard
//     set (the guest's own /dev, with its pts and shm), not remade;
//   - kernel file systems elsewhere (tmpfs at /run, say) are mounted by the
//     agent in the guest with the mount's options;
//   - a bind mount's source is copied into the container's image at its
//     destination when the container is created (a snapshot of the host's
//     files: later changes on either side do not cross), and the agent
//     binds it onto itself with the mount's flags (ro stays read-only);
//   - anything else (a block device, an overlay, a network file system)
//     is refused at `create`, naming the mount.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/agent/protocol.h"
#include "src/oci/spec.h"

namespace ember::oci {

struct MountPlan {
  std::vector<agent::MountSpec> guest;  // for the agent, in config.json's order
  struct Copy {
    std::string source;       // on the host
    std::string destination;  // in the image
  };
  std::vector<Copy> copies;
  // Every destination the plan mounts on, made in the image beforehand so
  // that a read-only root needs no mkdir in the guest.
  std::vector<std::string> directories;
};

absl::StatusOr<MountPlan> PlanMounts(const std::vector<MountEntry>& mounts);

// The bytes the copies add to the image (for its size).
uint64_t CopiesBytes(const MountPlan& plan);

// Writes the plan's directories and copies into the ext4 `image` (made by
// MakeImage) with debugfs, without mounting it.
absl::Status ApplyToImage(const MountPlan& plan, const std::string& image);

}  // namespace ember::oci
