// src/config is the typed configuration of a microVM and its validation,
// shared by the config file, the API and snapshots. It may use src/common
// only.
//
// Typed configuration of a microVM, as parsed by api/ from the config file
// or API requests. The VMM core never sees JSON.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "src/common/huge_pages.h"
#include "src/config/cpu_template.h"

namespace ember {

inline constexpr uint32_t kMinVcpus = 1;
inline constexpr uint32_t kMaxVcpus = 32;

struct BootSourceConfig {
  std::string kernel_image_path;
  std::string initrd_path;               // empty: no initrd
  std::optional<std::string> boot_args;  // absent: kDefaultBootArgs
  friend bool operator==(const BootSourceConfig&, const BootSourceConfig&) = default;
};

struct MachineConfig {
  uint32_t vcpu_count = 1;
  uint64_t mem_size_mib = 128;
  bool track_dirty_pages = false;
  HugePages huge_pages = HugePages::kNone;
  // Two threads a core (CPUID topology); vcpu_count must then be 1 or even.
  bool smt = false;
  // A static template (T2 and the like); a custom one is VmConfig's
  // cpu_config. At most one of them is set, as in Firecracker.
  StaticCpuTemplate cpu_template = StaticCpuTemplate::kNone;
  friend bool operator==(const MachineConfig&, const MachineConfig&) = default;
};

// A token bucket, as Firecracker's TokenBucket: `size` tokens, refilled
// continuously at size per refill_time_ms; `one_time_burst` extra tokens
// are spent first and never come back. Both size and refill_time_ms are
// positive (0 and 0 means no bucket, and is parsed as none).
struct TokenBucketConfig {
  uint64_t size = 0;
  uint64_t refill_time_ms = 0;
  uint64_t one_time_burst = 0;
  friend bool operator==(const TokenBucketConfig&, const TokenBucketConfig&) = default;
};

// Firecracker's RateLimiter: bytes and operations limited independently;
// a bucket that is absent does not limit. Both absent ({}): no limiting.
struct RateLimiterConfig {
  std::optional<TokenBucketConfig> bandwidth;  // bytes
  std::optional<TokenBucketConfig> ops;        // requests (block, entropy) or frames (net)
  friend bool operator==(const RateLimiterConfig&, const RateLimiterConfig&) = default;
};

// A PATCH of a running device's limiter: a bucket given replaces the old
// one (a fresh, full bucket), a bucket given as size 0 and refill_time 0
// removes it, a bucket not given stays as it is.
struct RateLimiterUpdate {
  std::optional<std::optional<TokenBucketConfig>> bandwidth;
  std::optional<std::optional<TokenBucketConfig>> ops;
};
// The limiter after `update`; nullopt when no bucket is left.
std::optional<RateLimiterConfig> ApplyUpdate(const std::optional<RateLimiterConfig>& current,
                                             const RateLimiterUpdate& update);
// The largest refill_time: in ns it must fit 64 bits.
inline constexpr uint64_t kMaxRefillTimeMs = UINT64_MAX / 1'000'000;

enum class CacheType { kUnsafe, kWriteback };
enum class IoEngine { kSync, kAsync };

// A virtio-blk drive, as Firecracker's `drives` entries.
struct DriveConfig {
  std::string drive_id;
  std::string path_on_host;
  bool is_root_device = false;
  bool is_read_only = false;
  std::string partuuid;  // root=PARTUUID=... when set on the root device
  CacheType cache_type = CacheType::kUnsafe;
  IoEngine io_engine = IoEngine::kSync;
  std::optional<RateLimiterConfig> rate_limiter;
};

// A virtio-net interface on a TAP, as Firecracker's `network-interfaces`.
// Firecracker's range for an interface's mtu.
inline constexpr uint16_t kMinMtu = 68;
inline constexpr uint16_t kMaxMtu = 65535;

struct NetConfig {
  std::string iface_id;
  std::string host_dev_name;
  std::optional<std::array<uint8_t, 6>> guest_mac;  // absent: the guest picks one
  // Offered to the guest (VIRTIO_NET_F_MTU); absent: its driver's default.
  std::optional<uint16_t> mtu;
  // Frames the guest receives and sends; ops counts frames, bandwidth
  // their bytes (virtio-net header included, as Firecracker counts).
  std::optional<RateLimiterConfig> rx_rate_limiter;
  std::optional<RateLimiterConfig> tx_rate_limiter;
};

// virtio-balloon, as Firecracker's `balloon`.
struct BalloonConfig {
  uint64_t amount_mib = 0;  // target size of the balloon
  bool deflate_on_oom = false;
  uint32_t stats_polling_interval_s = 0;  // 0: no statistics queue
  // The guest hands free pages over when the host asks (hinting) or on its
  // own once they have been free a while (reporting); the host drops them.
  bool free_page_hinting = false;
  bool free_page_reporting = false;
};

// virtio-vsock with Firecracker's Unix-socket host side, as `vsock`.
inline constexpr uint32_t kMinGuestCid = 3;  // 0-2 are reserved (host = 2)
struct VsockConfig {
  std::string vsock_id;  // deprecated in Firecracker; accepted and kept
  uint32_t guest_cid = 0;
  // Host programs connect here; a guest connection to port P goes to a
  // listener at "<uds_path>_<P>".
  std::string uds_path;
};

// Memory hotplug (virtio-mem), as Firecracker's `memory-hotplug`: a
// region of total_size_mib past RAM that the guest plugs in blocks of
// block_size_mib when asked (PATCH /hotplug/memory), the host backing it
// in KVM slots of slot_size_mib.
struct MemoryHotplugConfig {
  uint32_t total_size_mib = 0;
  uint32_t slot_size_mib = 128;
  uint32_t block_size_mib = 2;
  friend bool operator==(const MemoryHotplugConfig&, const MemoryHotplugConfig&) = default;
};

// virtio-pmem, as Firecracker's `pmem`: a host file the guest sees as
// persistent memory (/dev/pmemN, in the order given).
struct PmemConfig {
  std::string id;
  std::string path_on_host;
  bool root_device = false;  // root=/dev/pmemN on the command line
  bool read_only = false;    // mapped read-only: the guest cannot change the file
  // Flushes (each an msync of the whole file): ops, and the file's size in bytes.
  std::optional<RateLimiterConfig> rate_limiter;
  friend bool operator==(const PmemConfig&, const PmemConfig&) = default;
};

// virtio-rng, as Firecracker's `entropy`.
struct EntropyConfig {
  std::optional<RateLimiterConfig> rate_limiter;
};

// PUT /logger and the config file's `logger`.
struct LoggerConfig {
  std::string log_path;  // a file or FIFO; empty: stderr
  std::optional<std::string> level;  // Error, Warning, Info, Debug, Trace, Off
  // Absent: as before (Firecracker); Ember shows levels from the start.
  std::optional<bool> show_level;
  std::optional<bool> show_log_origin;
  // Only lines from source files below this path ("src/devices/virtio");
  // absent: as before (Firecracker), "": all.
  std::optional<std::string> module;
};

// PUT /metrics and the config file's `metrics`.
struct MetricsConfig {
  std::string metrics_path;  // a file (appended to) or a FIFO
  bool emit_id = false;      // each line carries the instance id as "id"
  // Each line carries them as "properties" (the operator's own labels).
  std::optional<std::map<std::string, std::string>> properties;
};

// PUT /mmds/config and the config file's `mmds-config`: which interfaces
// reach MMDS, at which address, and how the guest talks to it.
struct MmdsConfig {
  enum class Version { kV1, kV2 };
  Version version = Version::kV1;  // Firecracker's default (V1 is deprecated)
  std::vector<std::string> network_interfaces;  // iface_ids; not empty
  uint32_t ipv4_address = 0xa9fea9fe;           // host order; 169.254.169.254
  bool imds_compat = false;
};

struct SerialConfig {
  // A file or named pipe for the guest's console output; empty: stdout.
  std::string serial_out_path;
  // Bytes of output; what the bucket cannot pay for is dropped (counted).
  std::optional<TokenBucketConfig> rate_limiter;
};

struct VmConfig {
  std::optional<BootSourceConfig> boot_source;
  MachineConfig machine;
  std::optional<CpuTemplate> cpu_config;
  SerialConfig serial;
  std::vector<DriveConfig> drives;
  std::vector<PmemConfig> pmem;
  std::optional<MemoryHotplugConfig> memory_hotplug;
  std::vector<NetConfig> net;
  std::optional<BalloonConfig> balloon;
  std::optional<VsockConfig> vsock;
  std::optional<EntropyConfig> entropy;
  std::optional<LoggerConfig> logger;
  std::optional<MetricsConfig> metrics;
  std::optional<MmdsConfig> mmds;
  // ember --boot-timer (not part of the JSON): the BootTimer device.
  bool boot_timer = false;
};

// Firecracker's answer where a balloon is asked for and there is none.
inline constexpr char kNoBalloon[] = "No balloon device found.";

// The guest command line when boot-source has no boot_args: Firecracker's
// (no serial port, no i8042 probing, no module loading), with pci=off as
// Firecracker's had before it had PCI: Ember has none.
inline constexpr char kDefaultBootArgs[] =
    "reboot=k panic=1 pci=off nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd "
    "swiotlb=noforce";

// Checks what can be checked without touching the host: ranges and
// required parts. Messages name the field.
absl::Status ValidateMachineConfig(const MachineConfig& m);
// The x86 boot protocol's command line is 2048 bytes with its NUL.
inline constexpr size_t kMaxBootArgsBytes = 2047;
// Firecracker's rule for boot_args: printable ASCII, and no longer than
// the command line can hold.
absl::Status ValidateBootSource(const BootSourceConfig& boot);
// Unique ids, at most one root device.
absl::Status ValidateDrives(const std::vector<DriveConfig>& drives);
// Ids as drives' (each once), and one root device at most among the pmem
// devices and the drives together (ParsePmem checks each path).
// Firecracker's rules: a block of at least 2 MiB and a power of 2, a slot
// of at least 128 MiB and a multiple of the block, the total a multiple
// of the slot (so at least one).
absl::Status ValidateMemoryHotplug(const MemoryHotplugConfig& config);
absl::Status ValidatePmem(const std::vector<PmemConfig>& pmem,
                          const std::vector<DriveConfig>& drives);
// The balloon cannot be larger than the guest.
absl::Status ValidateBalloon(const BalloonConfig& balloon, const MachineConfig& machine);
// guest_cid at least kMinGuestCid, uds_path not empty.
absl::Status ValidateVsock(const VsockConfig& vsock);
// Unique ids and TAP names.
absl::Status ValidateNet(const std::vector<NetConfig>& net);
// Firecracker's rules: a link-local address (169.254.0.0/16 but not
// 169.254.0.x or 169.254.255.x), at least one interface, each one of `net`'s.
absl::Status ValidateMmds(const MmdsConfig& mmds, const std::vector<NetConfig>& net);
// Firecracker's id rule for drives and interfaces: 1-64 of [A-Za-z0-9_-].
bool ValidDeviceId(const std::string& id);

// The drive with `drive_id`, or nullptr.
DriveConfig* FindDrive(VmConfig& config, const std::string& drive_id);
// InvalidArgument unless an interface `iface_id` is configured.
absl::Status CheckNetExists(const VmConfig& config, const std::string& iface_id);
// InvalidArgument unless there is a balloon that may inflate to `amount_mib`.
absl::Status CheckBalloonTarget(const VmConfig& config, uint64_t amount_mib);

}  // namespace ember
