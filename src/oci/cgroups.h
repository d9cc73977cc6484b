// The container's cgroup, as runc makes it: config.json's
// linux.cgroupsPath with linux.resources' limits. `create` joins it before
// forking the monitor, so the monitor (the pid the shim watches for
// statistics and OOM events) and the VMM with all of the guest's memory and
// vCPU time are in it; `delete` removes it. With no cgroupsPath nothing
// changes. The limits bound the whole microVM: a memory limit below the
// guest's memory lets the host's OOM killer end the VMM.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/jail/cgroup.h"
#include "src/oci/spec.h"

namespace ember::oci {

// The v1 controllers a container's cgroup is made in (those mounted).
const std::vector<std::string>& ContainerControllers();

// The cgroup path systemd gives the systemd form of cgroupsPath
// ("slice:prefix:name", what containerd passes with SystemdCgroup = true):
// the slice expanded as systemd nests slices, then prefix-name.scope
// ("kubepods-besteffort-pod1.slice:cri-containerd:abc" is
// "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/
// cri-containerd-abc.scope"), as runc's cgroupfs fallback makes it. Ember
// makes it in the file system, without asking systemd over D-Bus.
absl::StatusOr<std::string> SystemdCgroupPath(const std::string& cgroups_path);

// What JoinCgroup does for `cgroups_path` ("/default/ID", or the systemd
// form above) under cgroup `version`.
absl::StatusOr<jail::CgroupPlacement> PlanCgroup(const std::string& cgroups_path,
                                                 const Resources& resources, int version);

}  // namespace ember::oci
