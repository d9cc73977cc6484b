// virtio-balloon (virtio 1.x, 5.5): the host sets a target in pages, the
// guest inflates by handing page frame numbers over, and Ember returns those
// pages to the host (madvise MADV_DONTNEED), so the host RSS of guest memory
// falls. Statistics arrive on their own queue every polling interval.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/config/vm_config.h"

namespace ember::virtio::balloon {

inline constexpr uint32_t kDeviceTypeBalloon = 5;
inline constexpr uint64_t kFeatureStatsVq = 1ull << 1;
inline constexpr uint64_t kFeatureDeflateOnOom = 1ull << 2;
inline constexpr uint16_t kQueueSize = 256;
inline constexpr size_t kInflateQueue = 0;
inline constexpr size_t kDeflateQueue = 1;
inline constexpr size_t kStatsQueue = 2;
inline constexpr uint64_t kPageSize = 4096;  // balloon PFNs are 4 KiB frames

struct BalloonCounters {
  uint64_t inflated_pages = 0;  // pages handed back to the host
  uint64_t deflated_pages = 0;
  uint64_t stats_updates = 0;
};

class BalloonDevice : public VirtioDevice {
 public:
  static absl::StatusOr<std::unique_ptr<BalloonDevice>> Create(const BalloonConfig& config);

  // For DeviceManager::WithDevice: the kind and how a message names it.
  static constexpr uint32_t kType = kDeviceTypeBalloon;
  static constexpr char kKind[] = "balloon device";

  uint32_t device_type() const override { return kDeviceTypeBalloon; }
  uint64_t features() const override;
  std::vector<uint16_t> queue_max_sizes() const override;
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void ProcessQueue(size_t index) override;
  void Reset() override;
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;
  // The statistics timer.
  int backend_fd() const override { return timer_.get(); }
  uint32_t backend_events() const override;
  void ProcessBackend(uint32_t events) override;
  // Reads the expiry and stops the timer: a device that is not running
  // asks for no statistics (Activate starts it again).
  void DrainBackend(uint32_t events) override;

  // Sets the target (may be called while the guest runs); the guest hears
  // of it through a configuration change interrupt.
  void SetTarget(uint64_t amount_mib);
  // A new statistics interval, the first update now. Statistics cannot be
  // turned on or off once the device exists (they need their own queue).
  absl::Status SetStatsInterval(uint32_t seconds);

  uint32_t target_pages() const { return target_pages_; }
  uint32_t stats_polling_interval_s() const { return config_.stats_polling_interval_s; }
  uint32_t actual_pages() const { return actual_pages_; }
  // The latest statistics by virtio tag (0 swap-in ... 9 hugetlb failures).
  const std::map<uint16_t, uint64_t>& stats() const { return stats_; }
  const BalloonCounters& balloon_counters() const { return balloon_counters_; }
  std::string metrics_name() const override { return "balloon"; }
  void AppendMetrics(MetricValues* out) const override {
    VirtioDevice::AppendMetrics(out);
    // Firecracker counts the inflate and deflate queues' notifications.
    out->insert(out->end(), {{"inflate_count", counters_.queue_events[kInflateQueue]},
                             {"deflate_count", counters_.queue_events[kDeflateQueue]},
                             {"stats_updates_count", balloon_counters_.stats_updates},
                             {"inflated_pages", balloon_counters_.inflated_pages},
                             {"deflated_pages", balloon_counters_.deflated_pages}});
  }
  void AppendLevels(MetricValues* out) const override {
    out->insert(out->end(), {{"target_pages", target_pages_}, {"actual_pages", actual_pages_}});
  }

 private:
  BalloonDevice(BalloonConfig config, UniqueFd timer)
      : config_(config), timer_(std::move(timer)) {}
  bool stats_enabled() const { return config_.stats_polling_interval_s > 0; }
  void StopTimer();
  // Returns the pages listed in `chain` to the host.
  void Inflate(const DescriptorChain& chain);
  void ReadStats(const DescriptorChain& chain);

  BalloonConfig config_;
  UniqueFd timer_;  // -1 without statistics
  uint32_t target_pages_ = 0;
  uint32_t actual_pages_ = 0;
  const GuestMemory* mem_ = nullptr;
  std::span<Queue> queues_;
  Interrupt* interrupt_ = nullptr;
  std::optional<uint16_t> stats_head_;  // the guest's stats buffer we hold
  std::map<uint16_t, uint64_t> stats_;
  BalloonCounters balloon_counters_;
};

}  // namespace ember::virtio::balloon
