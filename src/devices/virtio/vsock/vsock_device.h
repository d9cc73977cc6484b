// virtio-vsock (virtio 1.2, 5.10) with Firecracker's Unix-socket host
// side (muxer.h): the guest's AF_VSOCK streams to the host (CID 2) become
// Unix stream sockets. Three queues: the guest's receive buffers, its
// packets, and the event queue, which only ever carries
// TRANSPORT_RESET after a snapshot is restored (streams are not saved;
// the guest must drop its sockets).
//
// Whatever the guest sends, a bad packet costs it a reset stream, never
// the device: malformed packets are counted and answered with an RST
// where there is someone to answer.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/devices/virtio/vsock/muxer.h"

namespace ember::virtio::vsock {

inline constexpr uint16_t kQueueSize = 256;
inline constexpr size_t kRxQueue = 0;
inline constexpr size_t kTxQueue = 1;
inline constexpr size_t kEventQueue = 2;
// struct virtio_vsock_event's only id (5.10.6.7).
inline constexpr uint32_t kEventTransportReset = 0;

class VsockDevice : public VirtioDevice {
 public:
  // Binds and listens on config.uds_path (AF_UNIX, SOCK_STREAM,
  // non-blocking, close-on-exec). Fails with InvalidArgument for a
  // reserved CID or a path too long for a socket, AlreadyExists when the
  // path exists, NotFound when its directory is missing; leaves nothing
  // behind on failure.
  static absl::StatusOr<std::unique_ptr<VsockDevice>> Create(const VsockConfig& config);
  static absl::StatusOr<std::unique_ptr<VsockDevice>> Create(const VsockConfig& config,
                                                             const VsockLimits& limits);
  // Closes every socket; removes uds_path if it still is the socket made.
  ~VsockDevice() override = default;

  // For DeviceManager::WithDevice: the kind and how a message names it.
  static constexpr uint32_t kType = 19;
  static constexpr char kKind[] = "vsock";

  const VsockConfig& config() const { return config_; }

  uint32_t device_type() const override { return kType; }
  std::string id() const override { return ""; }  // one per VM
  uint64_t features() const override { return kFeatureVersion1 | kFeatureEventIdx; }
  std::vector<uint16_t> queue_max_sizes() const override {
    return {kQueueSize, kQueueSize, kQueueSize};
  }
  // guest_cid, le64 (5.10.4); the driver may not write it.
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void ProcessQueue(size_t index) override;
  // Every stream is dropped without a word: the driver reset the device.
  void Reset() override;

  // The CID and where host ports were allocated up to, versioned. Not the
  // streams: after a restore the guest gets TRANSPORT_RESET as soon as it
  // has an event buffer, and no packet reaches it before it has taken
  // that event (its next event queue notification). uds_path is not
  // saved: a restored VM listens where its configuration says
  // (vsock_override changes it).
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;

  // The muxer's inner epoll: the listener, every host socket, a timer.
  int backend_fd() const override { return muxer_->epoll_fd(); }
  uint32_t backend_events() const override;
  void ProcessBackend(uint32_t events) override;
  // Closes new host connections and drops streams, so nothing stays ready.
  void DrainBackend(uint32_t events) override;

  const VsockCounters& vsock_counters() const { return vsock_counters_; }
  size_t connections() const { return muxer_->connections(); }
  std::string metrics_name() const override { return "vsock"; }
  void AppendMetrics(MetricValues* out) const override;
  void AppendLevels(MetricValues* out) const override;

 private:
  explicit VsockDevice(VsockConfig config) : config_(std::move(config)) {}
  void ProcessTx();
  // Hands the guest what the muxer has for it, while it has buffers.
  void ProcessRx();
  // Sends TRANSPORT_RESET if one is owed and the guest gave a buffer.
  void SendTransportReset();

  VsockConfig config_;
  VsockCounters vsock_counters_;
  std::unique_ptr<Muxer> muxer_;
  const GuestMemory* mem_ = nullptr;
  std::span<Queue> queues_;
  Interrupt* interrupt_ = nullptr;
  bool reset_owed_ = false;     // restored: TRANSPORT_RESET to send
  bool reset_unacked_ = false;  // sent; the guest has not taken it yet
  // The event queue's avail index when the reset went out: the guest gives
  // the buffer back once it has dropped its streams, and that is its ack.
  uint16_t reset_avail_idx_ = 0;
  uint16_t EventAvailIdx() const;
};

}  // namespace ember::virtio::vsock
