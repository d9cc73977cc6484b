// A container's root inside the guest (ContainerSpec, protocol.h): its
// drive mounted once at its directory, with the file systems a container's
// process expects inside (OCI's standard mounts: /proc, /sys, /dev).
//
// The guest runs one container, so there are no namespaces: the mounts are
// the guest's own, and the process is confined to the root by chroot (as
// runc --no-pivot does). They last as long as the guest.
#pragma once

#include <string>

#include "src/agent/protocol.h"

namespace ember::agent {

// Mounts spec.root_device (ext4) at spec.root_dir unless something is
// mounted there already, then proc at /proc, sysfs at /sys and the guest's
// /dev (recursively bound, so /dev/pts and the agent's terminals are the
// same) at /dev inside it, each unless mounted already, making the
// directories it needs, then spec.mounts in order (each unless mounted
// already). Nothing to do without a root_device. False with *error on the
// first failure.
bool PrepareRoot(const ContainerSpec& spec, std::string* error);

// Mounts `source` on `target` (made, with its parents, when missing)
// unless something is mounted there already.
bool MountOnce(const char* source, const std::string& target, const char* type,
               unsigned long flags, std::string* error, const char* data = nullptr);

// Sends SIGKILL to every process whose root directory is `root` (the
// container's processes: chrooted there, and whatever they started).
void KillProcessesIn(const std::string& root);

// Whether `path` is the top of a mount (a bind mount from the same file
// system included), or "/".
bool IsMountPoint(const std::string& path);

}  // namespace ember::agent
