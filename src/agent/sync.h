// SYNC (protocol.h): a directory of the container's image made to hold what
// the host's source of a bind mount holds now, so that a read-only bind
// mount follows its source as it does under runc (Kubernetes updating a
// configMap's or a secret's volume, rotating a service account's token).
#pragma once

#include <string>
#include <vector>

#include "src/agent/protocol.h"

namespace ember::agent {

// Mounts request.device (ext4) under /run/ember-sync once, a mount of the
// agent's own (the container's view of the copies is covered, and its root
// may be read-only), and applies the entries to request.top there.
bool Sync(const SyncRequest& request, std::string* error);

// Makes the directory `top` hold exactly `entries` (DecodeSync's order:
// parents first), following no symbolic link, in the order that keeps a
// reader's view whole as Kubernetes' atomic writer keeps it: directories
// and files first (a changed file written under a temporary name and
// renamed over the old one), then the symbolic links (each replaced by a
// rename, so `..data` turning to a new timestamped directory is one step),
// then what the tree no longer has is removed. Unchanged entries are not
// touched. False with *error on the first failure.
bool ApplyTree(int top, const std::vector<TreeEntry>& entries, std::string* error);

}  // namespace ember::agent
