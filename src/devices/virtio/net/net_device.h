// virtio-net on a TAP (virtio 1.x, 5.1): one receive and one transmit
// queue, the 12-byte header passed through to the TAP so checksum and TSO
// offloads cross in both directions, and mergeable receive buffers.
// Frames move on the VMM thread; a TAP that fails is logged and counted,
// and the VM runs on.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "src/devices/virtio/net/tap.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/config/vm_config.h"

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
};

class NetDevice : public VirtioDevice {
 public:
  static absl::StatusOr<std::unique_ptr<NetDevice>> Create(const NetConfig& config);

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

  const NetCounters& net_counters() const { return net_counters_; }
  std::string metrics_name() const override { return "net_" + config_.iface_id; }
  void AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const override;

 private:
  NetDevice(NetConfig config, Tap tap) : config_(std::move(config)), tap_(std::move(tap)) {}
  void Transmit();
  // Moves frames from the TAP into receive buffers until either runs out.
  void Receive();
  // Copies the pending frame into as many receive chains as it needs;
  // false (nothing consumed) when the guest has not given enough buffers.
  bool DeliverPending();
  void TapError(const char* what, int err);

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
  NetCounters net_counters_;
};

}  // namespace ember::virtio::net
