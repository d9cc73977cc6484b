// virtio-blk on a raw file. Two engines, as Firecracker's io_engine:
// Sync runs each request on the VMM thread with preadv/pwritev straight
// into guest buffers; Async submits them to an io_uring and completes them
// when its eventfd fires, so the VMM thread never waits for the disk.
// Backend errors (EIO, ENOSPC, ...) reach the guest as I/O errors and are
// counted; the VMM runs on.
//
// Requests in flight when the driver resets the device are dropped: the
// reset waits for them (at most kDrainTimeout, whatever signals arrive),
// and any that finish later still never reach the re-initialised queue.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/latency_metric.h"
#include "src/common/unique_fd.h"
#include "src/devices/virtio/block/io_uring.h"
#include "src/devices/virtio/block/request.h"
#include "src/devices/virtio/rate_limiter.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/config/vm_config.h"

namespace ember::virtio::block {

inline constexpr uint32_t kDeviceTypeBlock = 2;
inline constexpr uint64_t kFeatureReadOnly = 1ull << 5;
inline constexpr uint64_t kFeatureFlush = 1ull << 9;
inline constexpr uint16_t kQueueSize = 256;
// Requests the Async engine keeps in flight at once.
inline constexpr unsigned kUringEntries = 128;
// How long a reset, a snapshot or a drive swap waits for the requests in
// flight (the thread that asked is blocked meanwhile).
inline constexpr std::chrono::seconds kDrainTimeout{5};

class BlockDevice : public VirtioDevice {
 public:
  // Opens the backing file (read-only when the drive is) and sizes the disk.
  static absl::StatusOr<std::unique_ptr<BlockDevice>> Create(const DriveConfig& config);

  // For DeviceManager::WithDevice: the kind and how a message names it.
  static constexpr uint32_t kType = kDeviceTypeBlock;
  static constexpr char kKind[] = "drive";

  uint32_t device_type() const override { return kDeviceTypeBlock; }
  std::string id() const override { return config_.drive_id; }
  uint64_t features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void ProcessQueue(size_t index) override;
  void Reset() override;
  // In-flight Async requests complete (and reach the used ring) first.
  void Quiesce() override { Drain(true); }
  // The io_uring's completion eventfd (Async only), edge-triggered: a
  // completion left unreaped while the device is not serving (reset, or
  // waiting for the driver to reset it) wakes the VMM loop once, not for
  // ever, and the default DrainBackend reads the count then. A reset reads
  // it too, once the requests in flight are reaped.
  int backend_fd() const override { return uring_ ? uring_->event_fd() : -1; }
  uint32_t backend_events() const override;
  void ProcessBackend(uint32_t events) override;
  // The rate limiter's timer: a throttled queue resumes when it expires.
  int timer_fd() const override { return timer_.get(); }
  void ProcessTimer() override;
  // Its limiter's buckets; a restored device looks at its ring once
  // (requests a limiter held back get no new kick).
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;
  ~BlockDevice() override;

  std::string metrics_name() const override { return "block_" + config_.drive_id; }
  void AppendMetrics(MetricValues* out) const override;
  void AppendLevels(MetricValues* out) const override;

  // PATCH /drives: RateLimiter::Update. A request it held back may go at
  // once.
  void UpdateRateLimiter(const RateLimiterUpdate& update);
  const RateLimiter& rate_limiter() const { return limiter_; }

  // PATCH /drives after boot: serves `path` from now on (requests already
  // submitted finish on the old file) and tells the guest through a
  // configuration change. On failure nothing changes.
  absl::Status SwapBacking(const std::string& path);

  uint64_t capacity_sectors() const { return capacity_sectors_; }
  const DriveConfig& config() const { return config_; }
  // The Async engine's ring, or null: for tests that submit on it or put
  // a file of their own (a pipe that answers when they say) under it.
  IoUring* io_uring_for_testing() { return uring_.get(); }

 private:
  // A request the io_uring is working on.
  struct InFlight {
    uint16_t head = 0;
    uint64_t status_addr = 0;
    uint64_t expected = 0;  // bytes the operation must move
    uint32_t written = 0;   // bytes written to the guest on success
    std::vector<iovec> iov;
    // Submitted before a reset (or the device's end): its completion only
    // frees the slot, it never reaches a queue.
    bool dropped = false;
    LatencyMetric* latency = nullptr;  // a read's or a write's, timed from
    uint64_t start_ns = 0;             // its submission
  };

  BlockDevice(DriveConfig config, UniqueFd file, uint64_t capacity_sectors,
              std::unique_ptr<IoUring> uring, UniqueFd timer);
  // Whether the limiter lets `req` go now; if not, the timer is armed.
  bool Admit(const Request& req);
  // Runs one parsed request; returns the status byte and bytes written to
  // the guest (for the used ring).
  uint8_t Execute(const Request& req, uint32_t* written);
  uint8_t Transfer(const Request& req);
  // Guest buffers as iovecs (checked by the queue and parser already).
  bool Iovecs(const Request& req, std::vector<iovec>* iov) const;
  // Async: hands `req` to the io_uring. False when the ring is full (the
  // chain goes back to the queue).
  bool Submit(const Request& req, uint16_t head);
  void Complete(uint16_t head, std::optional<uint64_t> status_addr, uint8_t status,
                uint32_t written);
  // Async: waits (at most kDrainTimeout) for everything in flight:
  // completing it for the guest, or (before forgetting the queue and guest
  // memory) dropping it. Then the eventfd is left not ready.
  void Drain(bool complete);
  // Async: takes every completion ready in the ring.
  void Reap();
  void ConsumeEventFd();

  DriveConfig config_;
  UniqueFd file_;
  uint64_t capacity_sectors_;
  const GuestMemory* mem_ = nullptr;
  Queue* queue_ = nullptr;
  Interrupt* interrupt_ = nullptr;
  std::unique_ptr<IoUring> uring_;
  std::vector<InFlight> slots_;
  std::vector<uint32_t> free_slots_;
  RateLimiter limiter_;
  UniqueFd timer_;
  uint64_t armed_until_ns_ = 0;  // when the timer was last armed to fire
  uint64_t throttled_ = 0, limiter_events_ = 0;
  bool stalled_ = false;  // the ring filled up; chains wait in the queue
  std::vector<iovec> sync_iov_;  // the Sync engine's, reused request to request
  uint64_t reads_ = 0, writes_ = 0, flushes_ = 0, read_bytes_ = 0, write_bytes_ = 0;
  uint64_t updates_ = 0, update_fails_ = 0;  // PATCH /drives swaps
  LatencyMetric read_agg_, write_agg_;       // how long reads and writes took
  // SwapBacking's work; SwapBacking counts how it went.
  absl::Status SwapFile(const std::string& path);
  // Counts a request the guest made (whatever its outcome).
  void CountRequest(const Request& req);
};

}  // namespace ember::virtio::block
