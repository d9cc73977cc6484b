// The virtio-mmio transport, version 2 (virtio 1.x, section 4.2): the
// register window a guest driver uses to negotiate features, place queues
// and drive a VirtioDevice. A hostile driver can only put the device into
// DEVICE_NEEDS_RESET; register writes out of order are ignored.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "src/common/byte_codec.h"
#include "src/common/unique_fd.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/vstate/bus.h"

namespace ember::virtio {

// Device status bits (2.1).
inline constexpr uint32_t kStatusAcknowledge = 1;
inline constexpr uint32_t kStatusDriver = 2;
inline constexpr uint32_t kStatusDriverOk = 4;
inline constexpr uint32_t kStatusFeaturesOk = 8;
inline constexpr uint32_t kStatusNeedsReset = 64;
inline constexpr uint32_t kStatusFailed = 128;

class MmioTransport : public BusDevice, public Interrupt {
 public:
  static constexpr uint64_t kWindowSize = 0x1000;
  static constexpr uint64_t kQueueNotifyOffset = 0x50;

  // `irq` is an eventfd wired to the device's interrupt line (an irqfd).
  MmioTransport(std::unique_ptr<VirtioDevice> device, const GuestMemory* mem, UniqueFd irq);

  // Register access from vCPU threads.
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Queue `index` was notified; runs the device on the calling (VMM)
  // thread. Unknown queues and inactive devices are ignored.
  void Notify(uint32_t index);
  // The device's backend fd is ready (VMM thread): the device processes
  // it when active, and otherwise drains it (VirtioDevice::DrainBackend),
  // so the fd never stays ready.
  void NotifyBackend(uint32_t events);
  // The device's timer_fd expired (VMM thread): read, then the device's
  // ProcessTimer when it is active and sound.
  void NotifyTimer();
  // Where QueueNotify writes that reach user space go (those an ioeventfd
  // did not catch), so that queue work stays on the VMM thread.
  void set_notify_fallback(std::function<void(uint32_t)> fn) { notify_fallback_ = std::move(fn); }

  void Trigger(uint32_t status_bit) override;
  // Interrupts raised so far (the metrics' interrupts.triggers).
  uint64_t interrupts() const { return interrupts_.load(std::memory_order_relaxed); }

  uint32_t status() const;

  // A transport's state for snapshots: registers, queues, device state.
  struct Registers {
    uint32_t status = 0, device_features_sel = 0, driver_features_sel = 0, queue_sel = 0;
    uint64_t driver_features = 0;
    uint32_t interrupt_status = 0, config_generation = 0;
    bool activated = false;

    // Field by field, within State's encoding.
    void Encode(ByteWriter& w) const;
    bool Decode(ByteReader& r);
    friend bool operator==(const Registers&, const Registers&) = default;
  };
  struct State {
    uint32_t device_type = 0;
    Registers registers;
    std::vector<Queue::State> queues;
    std::vector<uint8_t> device;  // the device's own encoding, opaque here

    // The snapshot encoding, field by field (the queues' and registers'
    // included); bump kVersion when it or theirs changes.
    static constexpr uint16_t kVersion = 1;
    static constexpr uint32_t kMaxQueues = 16;
    // Room for virtio-mem's bitmap of plugged blocks: a bit per block of
    // the largest region KVM's slots can hold (4 TiB in 2 MiB blocks).
    static constexpr uint32_t kMaxDeviceState = 1 << 20;
    void Encode(ByteWriter& w) const;
    // False (and `r` says why) on a short or malformed input, or more than
    // kMaxQueues queues or kMaxDeviceState bytes of device state.
    bool Decode(ByteReader& r);
    friend bool operator==(const State&, const State&) = default;
  };
  // Finishes the device's in-flight work first.
  State SaveState();
  // The device's Quiesce, once the driver has set it going.
  void Quiesce();
  // Onto a transport built from the same configuration; an activated device
  // is activated again with the restored queues.
  absl::Status RestoreState(const State& state);
  // Runs `f` on the device under the transport's lock (from any thread).
  template <typename F>
  auto WithDevice(F f) {
    std::lock_guard lock(mu_);
    return f(*device_);
  }
  size_t num_queues() const { return queues_.size(); }
  VirtioDevice& device() { return *device_; }
  int irq_fd() const { return irq_.get(); }

 private:
  uint32_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint32_t value);
  void WriteStatus(uint32_t value);
  Queue* SelectedQueue();
  // Marks the device as needing a reset after a queue broke.
  void NeedsReset(const std::string& why);
  void ResetDevice();
  // Has the VMM thread look at every ready queue once.
  void NotifyEveryQueue();

  mutable std::mutex mu_;
  std::unique_ptr<VirtioDevice> device_;
  const GuestMemory* mem_;
  UniqueFd irq_;
  std::function<void(uint32_t)> notify_fallback_;
  std::vector<Queue> queues_;
  std::atomic<uint32_t> interrupt_status_{0};
  std::atomic<uint64_t> interrupts_{0};
  uint32_t status_ = 0;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t queue_sel_ = 0;
  uint32_t config_generation_ = 0;
  bool activated_ = false;
};

}  // namespace ember::virtio
