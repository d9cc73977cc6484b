// A container's record under ember-oci's root (<root>/<id>/state.json) and
// what `state` prints from it (the OCI runtime spec's state object).
//
// Processes are named by pid and start time together (field 22 of
// /proc/<pid>/stat), so that a pid the kernel reused never passes for the
// container's monitor or VMM.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::oci {

inline constexpr char kOciVersion[] = "1.0.2";

struct ProcessRef {
  pid_t pid = 0;
  uint64_t start_time = 0;  // clock ticks since boot; 0: unknown
};

struct ContainerRecord {
  std::string id;
  std::string bundle;
  std::string rootfs;   // the bundle's root.path, absolute
  std::string created;  // RFC 3339 with nanoseconds, UTC
  ProcessRef monitor;   // the pid in the pid file: lives as long as the process
  ProcessRef vmm;       // ember (or the jailer that became it)
  bool started = false;
  std::string jail_dir;  // the jail's directory to remove at delete; or ""
  std::string uds;       // the VM's vsock socket on the host (exec connects there)
  bool paused = false;   // by `pause`, until `resume`
  bool sandbox = false;  // a pod's sandbox: the monitor runs no VM (create.cc)
  std::string cgroup;    // made by create below the cgroup mount(s); or ""
  int cgroup_version = 0;
  // The network namespace the VMM's TAP (TapName) is in when config.json
  // names one (a pod's, which outlives the container: delete removes the
  // TAP there); "" for a namespace of the container's own.
  std::string netns;
  std::map<std::string, std::string> annotations;
};

// kCreating only for the state create's hooks see, as runc's.
enum class Status { kCreating, kCreated, kRunning, kPaused, kStopped };
const char* StatusName(Status status);

// Start time of `pid`, or 0 when it is gone or a zombie (it has exited).
uint64_t ProcessStartTime(pid_t pid);
ProcessRef RefOf(pid_t pid);
// Whether the process is still the one recorded and has not exited.
bool Alive(const ProcessRef& ref);

// The monitors of `exec`'d processes, one file each in the container's
// directory (exec-<pid>: its start time), for `ps` and `kill --all`.
void RecordExec(const std::string& dir, const ProcessRef& monitor);
// Those still alive, oldest pid first.
std::vector<ProcessRef> LiveExecs(const std::string& dir);

// created until `start`, running while the monitor lives (paused between
// `pause` and `resume`), then stopped.
Status StatusOf(const ContainerRecord& record);

std::string RecordToJson(const ContainerRecord& record);
absl::StatusOr<ContainerRecord> RecordFromJson(const std::string& json);

// The OCI state: ociVersion, id, status, pid (0 once stopped), bundle,
// rootfs, created, owner, annotations; as runc prints it.
// Indented as `state` prints it; on one line for hooks (as runc's).
std::string OciStateJson(const ContainerRecord& record, Status status, bool pretty = true);

// Now, as RFC 3339 with nanoseconds in UTC ("2026-12-01T22:11:55.535880233Z").
std::string NowRfc3339();

// A container id runc accepts: letters, digits, '_', '+', '-', '.'; not
// "." or "..", at most 1024 bytes.
bool ValidId(const std::string& id);

}  // namespace ember::oci
