// What the API asks of the VMM, as typed values: the API thread parses a
// request into a VmmAction, the VMM thread runs it and answers a VmmResult.
// Actions that configure the microVM name what they change (kWhat): they
// are refused once it runs.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "src/config/vm_config.h"

namespace ember {

struct GetInstanceInfo {};
struct GetVmConfig {};
struct GetMachineConfig {};
struct PutMachineConfig {
  static constexpr char kWhat[] = "machine-config";
  MachineConfig config;
  // Whether config.cpu_template was given: if not, the template set before
  // stays; if so, it replaces a custom one too (Firecracker).
  bool sets_cpu_template = false;
};
// PATCH /machine-config: only the fields given change.
struct PatchMachineConfig {
  static constexpr char kWhat[] = "machine-config";
  std::optional<uint32_t> vcpu_count;
  std::optional<uint64_t> mem_size_mib;
  std::optional<bool> track_dirty_pages;
  std::optional<HugePages> huge_pages;
  std::optional<bool> smt;
  std::optional<StaticCpuTemplate> cpu_template;  // replaces a custom one too
};
struct PutBootSource {
  static constexpr char kWhat[] = "boot-source";
  BootSourceConfig config;
};
struct PutDrive {
  static constexpr char kWhat[] = "drives";
  DriveConfig config;
};
// PATCH /drives/{id}: a new backing file or rate limiter, before or after
// the start.
struct PatchDrive {
  std::string drive_id;
  std::optional<std::string> path_on_host;
  std::optional<RateLimiterUpdate> rate_limiter;
};
struct PutPmem {
  static constexpr char kWhat[] = "pmem";
  PmemConfig config;
};
// PATCH /pmem/{id}: a new rate limiter, once the VM runs.
struct PatchPmem {
  std::string id;
  std::optional<RateLimiterUpdate> rate_limiter;  // none: nothing changes (Firecracker)
};
struct PutMemoryHotplug {
  static constexpr char kWhat[] = "memory-hotplug";
  MemoryHotplugConfig config;
};
// PATCH /hotplug/memory: how much of the region the guest should plug.
struct PatchMemoryHotplug {
  uint32_t requested_size_mib = 0;
};
struct GetMemoryHotplug {};
struct PutNetworkInterface {
  static constexpr char kWhat[] = "network-interfaces";
  NetConfig config;
};
struct PutBalloon {
  static constexpr char kWhat[] = "the balloon device";
  BalloonConfig config;
};
struct PutVsock {
  static constexpr char kWhat[] = "vsock";
  VsockConfig config;
};
struct PutEntropy {
  static constexpr char kWhat[] = "the entropy device";
  EntropyConfig config;
};
struct PutCpuConfig {
  static constexpr char kWhat[] = "cpu-config";
  CpuTemplate config;
};
struct PatchBalloon {
  uint64_t amount_mib;
};
struct GetBalloon {};
struct GetBalloonStats {};
struct PatchBalloonStats {
  uint32_t stats_polling_interval_s;
};
// PATCH /balloon/hinting/start and /stop, GET /balloon/hinting/status.
struct StartBalloonHinting {
  bool acknowledge_on_stop = true;  // Firecracker's default
};
struct StopBalloonHinting {};
struct GetBalloonHintingStatus {};
// PATCH /network-interfaces/{id}: Firecracker changes only rate limiters
// here (a limiter not given stays as it is); the interface must exist.
struct PatchNetworkInterface {
  std::string iface_id;
  std::optional<RateLimiterUpdate> rx_rate_limiter;
  std::optional<RateLimiterUpdate> tx_rate_limiter;
};
struct PutSerial {
  static constexpr char kWhat[] = "serial";
  SerialConfig config;
};
struct InstanceStart {};
struct PutLogger {
  static constexpr char kWhat[] = "the logger";
  LoggerConfig config;
};
struct PutMetrics {
  static constexpr char kWhat[] = "metrics";
  MetricsConfig config;
};
struct FlushMetrics {};
// MMDS's data store, before and after the start: PUT replaces the
// document, PATCH merges into it (RFC 7396); the JSON text as the API got it.
struct PutMmds {
  std::string json;
};
struct PatchMmds {
  std::string json;
};
struct GetMmds {};
// PUT /mmds/config: before the start only, as in Firecracker.
struct PutMmdsConfig {
  static constexpr char kWhat[] = "mmds-config";
  MmdsConfig config;
};
struct SendCtrlAltDel {};

// PATCH /vm: pause or resume a running microVM.
struct PatchVmState {
  bool paused;
};

// PUT /snapshot/create (the VM must be paused).
struct CreateSnapshot {
  std::string snapshot_path;
  std::string mem_file_path;
  bool diff = false;
};
// PUT /snapshot/load, on a VMM that has not been configured.
struct LoadSnapshot {
  std::string snapshot_path;
  std::string mem_backend_path;
  bool uffd = false;  // mem_backend.backend_type "Uffd"
  bool track_dirty_pages = false;
  bool resume_vm = false;
  bool clock_realtime = false;  // advance kvmclock by the time since the save
  std::optional<HugePages> huge_pages;  // absent ("Snapshot"): the snapshot's own
  std::vector<std::pair<std::string, std::string>> network_overrides;  // iface, TAP
  std::optional<std::string> vsock_uds_path;  // vsock_override.uds_path
  // Ember's extension (docs/working-set.md): pages to load first.
  std::optional<std::string> working_set_path;
};
// PUT /snapshot/working-set, Ember's extension: saves the guest pages the
// VM restored from `snapshot_path` has touched so far.
struct RecordWorkingSet {
  std::string snapshot_path;
  std::string working_set_path;
};

using VmmAction =
    std::variant<GetInstanceInfo, GetVmConfig, GetMachineConfig, PutMachineConfig,
                 PatchMachineConfig, PutBootSource, PutDrive, PutNetworkInterface, PutBalloon,
                 PatchBalloon, GetBalloon, GetBalloonStats, PutSerial, InstanceStart,
                 PatchVmState, PutLogger, PutMetrics, FlushMetrics, PatchDrive,
                 SendCtrlAltDel, PatchBalloonStats, PatchNetworkInterface, CreateSnapshot,
                 LoadSnapshot, RecordWorkingSet, PutVsock, PutEntropy, PutMmds, PatchMmds, GetMmds,
                 PutMmdsConfig, StartBalloonHinting, StopBalloonHinting,
                 GetBalloonHintingStatus, PutCpuConfig, PutPmem, PatchPmem, PutMemoryHotplug,
                 PatchMemoryHotplug, GetMemoryHotplug>;

struct InstanceInfo {
  std::string id;
  std::string state;  // "Not started", "Running" or "Paused"
  std::string vmm_version;
};

struct BalloonStats {
  uint32_t target_pages = 0;
  uint32_t actual_pages = 0;
  std::map<uint16_t, uint64_t> stats;  // by virtio tag
};

// The last free page hinting command of each side (0 STOP, 1 DONE, else
// a run's id); none from a guest whose driver has sent none.
struct BalloonHintingStatus {
  uint32_t host_cmd = 0;
  std::optional<uint32_t> guest_cmd;
};

// GET /mmds: the document, compact JSON.
struct MmdsDocument {
  std::string json;
};

// GET /hotplug/memory, in MiB.
struct MemoryHotplugStatus {
  uint32_t total_size_mib = 0;
  uint32_t slot_size_mib = 0;
  uint32_t block_size_mib = 0;
  uint32_t plugged_size_mib = 0;
  uint32_t requested_size_mib = 0;
};

using VmmResult = std::variant<std::monostate, InstanceInfo, VmConfig, MachineConfig,
                               BalloonConfig, BalloonStats, MmdsDocument,
                               BalloonHintingStatus, MemoryHotplugStatus>;

}  // namespace ember
