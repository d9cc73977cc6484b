// virtio-balloon (virtio 1.x, 5.5): the host sets a target in pages, the
// guest inflates by handing page frame numbers over, and Ember returns those
// pages to the host (madvise MADV_DONTNEED), so the host RSS of guest memory
// falls. Statistics arrive on their own queue every polling interval.
//
// Two optional queues hand free memory over without changing the target:
// free page reporting (the guest reports blocks that stayed free, waiting
// until the host has dropped them) and free page hinting (the host starts
// a run, the guest allocates what it can spare and hints it, then frees it
// when the host says the run is done). Hinting has Firecracker's caveat:
// Linux's shrinker may free a hinted block still waiting in the queue, and
// dropping it then loses what the guest wrote there since; reporting waits
// for the host, so it has no such window.
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
inline constexpr uint64_t kFeatureFreePageHint = 1ull << 3;
inline constexpr uint64_t kFeatureReporting = 1ull << 5;
inline constexpr uint16_t kQueueSize = 256;
inline constexpr size_t kInflateQueue = 0;
inline constexpr size_t kDeflateQueue = 1;
// The optional queues follow in this order, each only if its feature was
// negotiated (Linux numbers the queues it uses without gaps).
inline constexpr size_t kStatsQueue = 2;  // when statistics are on
inline constexpr uint64_t kPageSize = 4096;  // balloon PFNs are 4 KiB frames

// free_page_hint_cmd_id values (5.5.6.7): 0 and 1 are commands, a run
// has an id of 2 or more.
inline constexpr uint32_t kHintCmdStop = 0;
inline constexpr uint32_t kHintCmdDone = 1;
inline constexpr uint32_t kHintFirstRunId = 2;

struct BalloonCounters {
  uint64_t inflated_pages = 0;  // pages handed back to the host
  uint64_t deflated_pages = 0;
  uint64_t stats_updates = 0;
  // Free page reporting and hinting, as Firecracker counts them: ranges
  // acted on, bytes dropped, ranges that could not be dropped.
  uint64_t reports = 0;
  uint64_t reported_bytes = 0;
  uint64_t report_fails = 0;
  uint64_t hints = 0;
  uint64_t hinted_bytes = 0;
  uint64_t hint_fails = 0;
};

// GET /balloon/hinting/status: the last command each side gave.
struct HintingStatus {
  uint32_t host_cmd = 0;
  std::optional<uint32_t> guest_cmd;
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
  // Free page hinting: a new run, whose end (the guest's stop) the device
  // acknowledges itself when `acknowledge_on_stop`; or the run's end now.
  absl::Status StartHinting(bool acknowledge_on_stop);
  absl::Status StopHinting();
  absl::StatusOr<HintingStatus> hinting_status() const;
  // The VM runs again (a resume, or a snapshot loaded and resumed): as in
  // Firecracker, a hinting run still open ends (DONE), so a guest paused
  // or saved in the middle of one gets its blocks back.
  void Resumed();

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
                             {"free_page_report_count", balloon_counters_.reports},
                             {"free_page_report_freed", balloon_counters_.reported_bytes},
                             {"free_page_report_fails", balloon_counters_.report_fails},
                             {"free_page_hint_count", balloon_counters_.hints},
                             {"free_page_hint_freed", balloon_counters_.hinted_bytes},
                             {"free_page_hint_fails", balloon_counters_.hint_fails},
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
  // Drops guest memory [addr, addr + len) on the host; false if the range
  // is not whole pages of guest memory or madvise fails.
  bool Discard(uint64_t addr, uint64_t len);
  // Returns the pages listed in `chain` to the host.
  void Inflate(const DescriptorChain& chain);
  void ReadStats(const DescriptorChain& chain);
  void Report(const DescriptorChain& chain);
  // Drops a reported or hinted range, counting it as Firecracker does.
  void DropFree(const Descriptor& d, const char* kind, uint64_t* ranges, uint64_t* bytes,
                uint64_t* fails);
  void Hint(const DescriptorChain& chain);
  // Serves every buffer of `index` now, signalling the guest.
  void Drain(size_t index);
  // Tells the guest the hinting command changed.
  void SetHostCmd(uint32_t cmd);

  BalloonConfig config_;
  UniqueFd timer_;  // -1 without statistics
  uint32_t target_pages_ = 0;
  uint32_t actual_pages_ = 0;
  const GuestMemory* mem_ = nullptr;
  std::span<Queue> queues_;
  Interrupt* interrupt_ = nullptr;
  std::optional<uint16_t> stats_head_;  // the guest's stats buffer we hold
  // Where each optional queue is, by the features the driver accepted.
  std::optional<size_t> stats_queue_, hint_queue_, report_queue_;
  // Free page hinting: the host's command (a run id, DONE or STOP) and the
  // guest's last (it echoes a run's id when it starts, STOP when it ends).
  uint32_t host_cmd_ = kHintCmdStop;
  std::optional<uint32_t> guest_cmd_;
  uint32_t last_run_id_ = kHintCmdDone;  // the next run's id follows it
  bool acknowledge_on_stop_ = false;
  std::map<uint16_t, uint64_t> stats_;
  BalloonCounters balloon_counters_;
};

}  // namespace ember::virtio::balloon
