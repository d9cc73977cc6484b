// A guest driver's side of a virtio-mmio device, from the host: the
// register sequence of virtio 1.x 3.1.1 (reset, ACKNOWLEDGE, DRIVER,
// features, FEATURES_OK, queues, DRIVER_OK) and queue kicks, with the
// interrupt observed on the device's irq eventfd.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/driver_queue.h"

namespace ember::virtio::testing {

class MmioDriver {
 public:
  // Queue rings are laid out from `ring_base`, 64 KiB apart.
  MmioDriver(MmioTransport& transport, const GuestMemory& mem, uint64_t ring_base);

  uint32_t Read(uint64_t offset);
  void Write(uint64_t offset, uint32_t value);

  // Runs the init sequence accepting `features` (masked by what the
  // device offers). Returns the final status register.
  uint32_t Init(uint64_t features, uint16_t queue_size);

  DriverQueue& queue(size_t i) { return *queues_[i]; }
  // Kicks queue `i` as the ioeventfd would: the device runs now.
  void Kick(uint32_t i) { transport_.Notify(i); }
  // True (and consumed) if the device raised its interrupt since last asked.
  bool TakeInterrupt();

 private:
  MmioTransport& transport_;
  const GuestMemory& mem_;
  const uint64_t ring_base_;
  std::vector<std::unique_ptr<DriverQueue>> queues_;
};

}  // namespace ember::virtio::testing
