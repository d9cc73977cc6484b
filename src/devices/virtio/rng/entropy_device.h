// virtio-rng, Firecracker's entropy device (virtio 1.x, 5.4): one queue of
// buffers the guest wants filled with random bytes, filled from the host's
// getrandom(2). The guest's hw_random core feeds them to its entropy pool.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/rate_limiter.h"
#include "src/devices/virtio/virtio_device.h"

namespace ember::virtio::rng {

inline constexpr uint32_t kDeviceTypeRng = 4;
inline constexpr uint16_t kQueueSize = 256;
// At most this much of one request is filled (Firecracker's cap too): the
// guest asks for a few dozen bytes at a time.
inline constexpr uint32_t kMaxBytesPerRequest = 64 << 10;
// At most this much per turn of the VMM loop; the rest waits for the
// device's timer, armed to fire at once, so that a guest posting many
// large buffers cannot hold the VMM thread.
inline constexpr uint64_t kMaxBytesPerRun = 1 << 20;

// Firecracker's entropy metrics (its devices/virtio/rng/metrics.rs).
struct EntropyCounters {
  uint64_t entropy_event_count = 0;  // requests served
  uint64_t entropy_bytes = 0;        // random bytes given to the guest
  uint64_t entropy_event_fails = 0;  // malformed requests, answered with 0 bytes
  uint64_t host_rng_fails = 0;       // getrandom failed
  uint64_t entropy_rate_limiter_throttled = 0;  // requests the limiter held back
  uint64_t rate_limiter_event_count = 0;        // the device's timer expired
};

class EntropyDevice : public VirtioDevice {
 public:
  // Makes the device's timerfd (none can be made once seccomp is on).
  static absl::StatusOr<std::unique_ptr<EntropyDevice>> Create(const EntropyConfig& config);

  // For DeviceManager::WithDevice.
  static constexpr uint32_t kType = kDeviceTypeRng;
  static constexpr char kKind[] = "entropy device";

  uint32_t device_type() const override { return kDeviceTypeRng; }
  uint64_t features() const override {
    return kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc;
  }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  // No configuration space.
  void ReadConfig(uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0);
  }
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  // No system calls: these run on vCPU threads (see the vcpu filter).
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void Reset() override;
  void ProcessQueue(size_t index) override;
  // Its limiter's buckets; a restored device looks at its ring once
  // (requests the snapshot caught waiting are served without a new kick).
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;
  int timer_fd() const override { return timer_.get(); }
  void ProcessTimer() override;

  const EntropyCounters& entropy_counters() const { return entropy_counters_; }
  const RateLimiter& rate_limiter() const { return limiter_; }
  std::string metrics_name() const override { return "entropy"; }
  void AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const override;

 private:
  EntropyDevice(const EntropyConfig& config, UniqueFd timer)
      : limiter_(config.rate_limiter, MonotonicNs()), timer_(std::move(timer)) {}
  // Serves requests until the ring is empty or this run's bytes are spent.
  void Serve();
  // Fills the chain's buffers; the bytes written (0 for a malformed one).
  uint32_t Fill(const DescriptorChain& chain);
  // Whether the limiter lets a request of `bytes` go now; if not, the
  // timer is armed for when it may.
  bool Admit(uint64_t bytes);

  RateLimiter limiter_;
  UniqueFd timer_;
  uint64_t armed_until_ns_ = 0;  // the limiter's wait the timer is armed for
  const GuestMemory* mem_ = nullptr;
  Queue* queue_ = nullptr;
  Interrupt* interrupt_ = nullptr;
  EntropyCounters entropy_counters_;
};

}  // namespace ember::virtio::rng
