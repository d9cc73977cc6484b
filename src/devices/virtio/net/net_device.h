// virtio-net on a TAP (virtio 1.x, 5.1): one receive and one transmit
// queue, the 12-byte header passed through to the TAP so checksum and TSO
// offloads cross in both directions, and mergeable receive buffers.
// Frames move on the VMM thread; a TAP that fails is logged and counted,
// and the VM runs on.
//
// Rate limiters, as Firecracker's: a frame the transmit limiter holds back
// stays in the avail ring; while the receive limiter holds a frame back
// no more are read from the TAP (they wait in the kernel's queue). The
// device's timer resumes either; nothing is dropped for the limiter.
//
// MMDS, on an interface named in mmds-config: every frame the guest sends
// goes to the MMDS stack first, and one it takes never reaches the TAP;
// MMDS's answers go to the guest before frames from the TAP. The same
// timer wakes the stack for its retransmissions.
#pragma once

#include <sys/uio.h>

#include <array>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/devices/virtio/net/tap.h"
#include "src/devices/virtio/rate_limiter.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/config/vm_config.h"
#include "src/mmds/network_stack.h"

namespace ember::virtio::net {

inline constexpr uint32_t kDeviceTypeNet = 1;
inline constexpr uint16_t kQueueSize = 256;
inline constexpr size_t kRxQueue = 0;
inline constexpr size_t kTxQueue = 1;
inline constexpr size_t kHeaderSize = 12;
// Header plus the largest frame a TSO/UFO guest or TAP may hand over.
inline constexpr size_t kMaxPacket = kHeaderSize + 65550;

// Feature bits (5.1.3).
inline constexpr uint64_t kFeatureCsum = 1ull << 0;
inline constexpr uint64_t kFeatureGuestCsum = 1ull << 1;
inline constexpr uint64_t kFeatureMtu = 1ull << 3;
inline constexpr uint64_t kFeatureMac = 1ull << 5;
inline constexpr uint64_t kFeatureGuestTso4 = 1ull << 7;
inline constexpr uint64_t kFeatureGuestTso6 = 1ull << 8;
inline constexpr uint64_t kFeatureGuestUfo = 1ull << 10;
inline constexpr uint64_t kFeatureHostTso4 = 1ull << 11;
inline constexpr uint64_t kFeatureHostTso6 = 1ull << 12;
inline constexpr uint64_t kFeatureHostUfo = 1ull << 14;
inline constexpr uint64_t kFeatureMrgRxbuf = 1ull << 15;

struct NetCounters {
  uint64_t rx_packets = 0, rx_bytes = 0, rx_dropped = 0;
  uint64_t tx_packets = 0, tx_bytes = 0, tx_dropped = 0;
  uint64_t tap_errors = 0;
  // Firecracker's names: frames (or wakeups while parked) the limiter held
  // back, and the limiter's timer waking the direction.
  uint64_t rx_rate_limiter_throttled = 0, tx_rate_limiter_throttled = 0;
  uint64_t rx_event_rate_limiter_count = 0, tx_rate_limiter_event_count = 0;
};

class NetDevice : public VirtioDevice {
 public:
  // Opens the configuration's TAP, the error naming the field.
  static absl::StatusOr<Tap> OpenTap(const NetConfig& config);
  // Takes `tap` (opened when the interface was configured) or opens it,
  // and makes the device's timerfd (none can be made once seccomp is on,
  // and a PATCH may add a limiter later).
  static absl::StatusOr<std::unique_ptr<NetDevice>> Create(const NetConfig& config,
                                                           std::optional<Tap> tap = {});

  // For DeviceManager::WithDevice: the kind and how a message names it.
  static constexpr uint32_t kType = kDeviceTypeNet;
  static constexpr char kKind[] = "network interface";

  uint32_t device_type() const override { return kDeviceTypeNet; }
  std::string id() const override { return config_.iface_id; }
  uint64_t features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void ProcessQueue(size_t index) override;
  void Reset() override;
  int backend_fd() const override { return tap_.fd(); }
  uint32_t backend_events() const override;
  void ProcessBackend(uint32_t events) override;
  // The TAP is edge-triggered: frames left in it wake nobody again, and
  // wait (as many as the kernel queues) for the next Activate. Only a
  // hang-up is noted.
  void DrainBackend(uint32_t events) override;
  // The limiters' timer, shared by both directions.
  int timer_fd() const override { return timer_.get(); }
  void ProcessTimer() override;
  // Its limiters' buckets; a restored device looks at its rings once
  // (frames a limiter held back get no new kick).
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;

  // PATCH: RateLimiter::Update for each direction the PATCH names; the
  // other keeps its state. A frame held back may go at once.
  void UpdateRateLimiters(const std::optional<RateLimiterUpdate>& rx,
                          const std::optional<RateLimiterUpdate>& tx);
  const RateLimiter& rx_rate_limiter() const { return rx_limiter_; }
  const RateLimiter& tx_rate_limiter() const { return tx_limiter_; }

  // The interface reaches MMDS through `stack` (nullptr: it does not).
  void SetMmds(std::unique_ptr<mmds::NetworkStack> stack) { mmds_ = std::move(stack); }
  const mmds::NetworkStack* mmds() const { return mmds_.get(); }

  const NetCounters& net_counters() const { return net_counters_; }
  std::string metrics_name() const override { return "net_" + config_.iface_id; }
  void AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const override;

 private:
  NetDevice(NetConfig config, Tap tap, UniqueFd timer);
  void Transmit();
  // Moves frames from the TAP into receive buffers until either runs out.
  void Receive();
  // Copies the pending frame into as many receive chains as it needs;
  // false (nothing consumed) when the guest has not given enough buffers.
  bool DeliverPending();
  void TapError(const char* what, int err);
  // Whether `limiter` lets a frame of `bytes` go now; if not, `*until` is
  // when that direction may try again, and the timer is armed for it.
  bool Admit(RateLimiter& limiter, uint64_t bytes, uint64_t* until);
  // Arms the timer for `until_ns` unless it will fire by then already.
  void ArmFor(uint64_t until_ns, uint64_t now_ns);
  // Whether MMDS took the frame (header and body in `iov`).
  bool DetourToMmds(const std::vector<iovec>& iov, size_t total);
  // Puts MMDS's next frame, behind a zero header, where the TAP's would go.
  bool TakeMmdsFrame();
  // Arms the timer for MMDS's next retransmission or probe, if any.
  void ArmForMmds();

  NetConfig config_;
  Tap tap_;
  const GuestMemory* mem_ = nullptr;
  Queue* rx_ = nullptr;
  Queue* tx_ = nullptr;
  Interrupt* interrupt_ = nullptr;
  bool mergeable_ = false;
  bool tap_failed_ = false;
  std::vector<uint8_t> frame_ = std::vector<uint8_t>(kMaxPacket);
  size_t pending_len_ = 0;  // a frame read from the TAP, waiting for buffers
  bool pending_paid_ = false;  // the receive limiter let that frame go
  RateLimiter rx_limiter_, tx_limiter_;
  UniqueFd timer_;
  // A direction the limiter parked: when it may go on (0: not parked).
  uint64_t rx_until_ = 0, tx_until_ = 0;
  uint64_t armed_until_ns_ = 0;  // when the timer is set to fire (0: not set)
  NetCounters net_counters_;
  std::unique_ptr<mmds::NetworkStack> mmds_;
  std::vector<uint8_t> tx_frame_;  // a guest frame gathered for MMDS
};

}  // namespace ember::virtio::net
