// Read-only bind mounts kept up to date. A microVM gets a copy of what is
// bound (mounts.h); where the source is a directory and the mount read-only
// (the container cannot write its side), the host's later changes are
// carried into the copy in the guest (the agent's SYNC), as a bind mount
// shows them under runc: Kubernetes' configMap, secret, downward API and
// projected volumes (a service account's token is rotated there), which
// kubelet replaces whole by switching their `..data` link.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/agent/protocol.h"
#include "src/client/exec_client.h"
#include "src/oci/mounts.h"

namespace ember::oci {

// The directory `source` as SYNC's entries (agent::SyncRequest), read
// through descriptors that follow no link, each directory's entries in
// name order; with `inotify` >= 0 each directory is watched before it is
// read. Unavailable when it changed while it was read (read it again);
// another error when it holds something other than files, directories and
// links, or more than a SYNC carries.
absl::StatusOr<std::vector<agent::TreeEntry>> ReadTree(const std::string& source,
                                                       int inotify = -1);

struct SyncedVolume {
  std::string source;  // on the host
  std::string copy;    // its copy in the image (kBindsDir/<n>)
  // The source as read before create copied it: the guest has this, or a
  // later state.
  std::vector<agent::TreeEntry> copied;
};

// The plan's read-only bind mounts of directories that a SYNC can carry;
// `skipped` is told why each other read-only directory is only a copy.
std::vector<SyncedVolume> VolumesToSync(
    const MountPlan& plan, const std::function<void(const std::string&)>& skipped);

// In a process of its own (the container's monitor's child, which dies with
// it; `connection` says how long to wait for the agent): sends each
// volume's tree to the agent when it differs from what was sent last (at
// first, from `copied`), so at once when it changed while create copied
// it, then after each change inotify reports, once the volume has been
// quiet for 100 ms, and at a rescan every 30 s (the only one without
// inotify). A failed SYNC is tried again after 1 s, then 2, 4, ... up to
// the rescan; `warn` is told each new failure. Never returns.
[[noreturn]] void RunVolumeSync(const std::vector<SyncedVolume>& volumes,
                                const std::string& device, client::ExecOptions connection,
                                const std::function<void(const std::string&)>& warn);

}  // namespace ember::oci
