// virtio-pmem (virtio 1.3, 5.19), Firecracker's `pmem`: a host file mapped
// into guest physical memory beyond RAM, which the guest uses as
// persistent memory (/dev/pmemN, or DAX) with plain loads and stores. Its
// one request is a flush: an msync of the file, coalesced per kick.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/rate_limiter.h"
#include "src/devices/virtio/virtio_device.h"

namespace ember::virtio::pmem {

inline constexpr uint32_t kDeviceTypePmem = 27;
inline constexpr uint16_t kQueueSize = 256;
// The guest's region starts and ends on this (Linux's virtio_pmem wants
// 2 MiB); a file's last part is padded with private anonymous memory.
inline constexpr uint64_t kAlignment = 2 << 20;
inline constexpr uint32_t kRequestFlush = 0;
inline constexpr uint32_t kResponseOk = 0;
inline constexpr uint32_t kResponseError = 1;

// The file, mapped shared (read-only if asked) for its length, then
// private anonymous memory up to kAlignment; unmapped at the end.
class PmemBacking {
 public:
  // Refuses an empty file, or one that is no regular file or block device.
  static absl::StatusOr<PmemBacking> Map(const std::string& path, bool read_only);
  PmemBacking(PmemBacking&& other) noexcept;
  PmemBacking& operator=(PmemBacking&& other) noexcept;
  ~PmemBacking();

  uint8_t* host() const { return host_; }
  uint64_t size() const { return size_; }  // of the mapping: kAlignment's multiple
  uint64_t file_size() const { return file_size_; }
  bool read_only() const { return read_only_; }
  // Writes the file's dirty pages back, and waits for it.
  absl::Status Sync() const;

 private:
  PmemBacking(uint8_t* host, uint64_t size, uint64_t file_size, bool read_only)
      : host_(host), size_(size), file_size_(file_size), read_only_(read_only) {}

  uint8_t* host_ = nullptr;
  uint64_t size_ = 0;
  uint64_t file_size_ = 0;
  bool read_only_ = false;
};

// Firecracker's pmem metrics (its devices/virtio/pmem/metrics.rs).
struct PmemCounters {
  uint64_t cfg_fails = 0;     // config space writes (it is read-only)
  uint64_t event_fails = 0;   // malformed requests, failed flushes
  uint64_t queue_event_count = 0;  // kicks served
  uint64_t rate_limiter_throttled_events = 0;
  uint64_t rate_limiter_event_count = 0;
};

class PmemDevice : public VirtioDevice {
 public:
  // The guest sees `backing` at `guest_addr` (kAlignment's multiple); the
  // caller gives KVM that slot, and the device keeps the mapping for as
  // long as the VM lives. Makes the limiter's timerfd (before seccomp).
  static absl::StatusOr<std::unique_ptr<PmemDevice>> Create(const PmemConfig& config,
                                                            PmemBacking backing,
                                                            uint64_t guest_addr);

  static constexpr uint32_t kType = kDeviceTypePmem;
  static constexpr char kKind[] = "pmem device";

  uint32_t device_type() const override { return kDeviceTypePmem; }
  std::string id() const override { return id_; }
  uint64_t features() const override { return kFeatureVersion1 | kFeatureEventIdx; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  // start (le64) and size (le64) of the guest's region.
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t, std::span<const uint8_t>) override { counters_pmem_.cfg_fails++; }
  // No system calls: these run on vCPU threads (see the vcpu filter).
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void Reset() override;
  void ProcessQueue(size_t index) override;
  // The region (start, size), so that a restore can check it maps the
  // same; requests the snapshot caught waiting are served once restored.
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;
  int timer_fd() const override { return timer_.get(); }
  void ProcessTimer() override;
  // PATCH /pmem/{id}.
  void UpdateRateLimiter(const RateLimiterUpdate& update);

  uint64_t guest_addr() const { return guest_addr_; }
  const PmemBacking& backing() const { return backing_; }
  const PmemCounters& pmem_counters() const { return counters_pmem_; }
  std::string metrics_name() const override { return "pmem_" + id_; }
  void AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const override;

 private:
  PmemDevice(const PmemConfig& config, PmemBacking backing, uint64_t guest_addr, UniqueFd timer)
      : id_(config.id), backing_(std::move(backing)), guest_addr_(guest_addr),
        limiter_(config.rate_limiter, MonotonicNs()), timer_(std::move(timer)) {}
  // Answers every request in the ring with one flush's outcome.
  void Serve();
  // Whether the limiter lets a flush go now; if not, the timer is armed
  // for when it may.
  bool Admit();
  // The status buffer's address, or none for a malformed request.
  std::optional<uint64_t> StatusAddress(const DescriptorChain& chain);

  std::string id_;
  PmemBacking backing_;
  uint64_t guest_addr_;
  RateLimiter limiter_;
  UniqueFd timer_;
  uint64_t armed_until_ns_ = 0;
  const GuestMemory* mem_ = nullptr;
  Queue* queue_ = nullptr;
  Interrupt* interrupt_ = nullptr;
  PmemCounters counters_pmem_;
};

}  // namespace ember::virtio::pmem
