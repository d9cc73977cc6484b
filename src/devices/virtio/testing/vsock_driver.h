// A guest's virtio-vsock driver from the host, for tests and fuzzers:
// packets written into transmit chains (cut anywhere the test likes),
// receive and event buffers given, and what the device put in them read
// back. It lays guest memory out as:
//   0x10000 + 0x10000 * queue   the rings
//   kTxArea                     transmit buffers, reused round robin
//   kRxArea + 64 KiB * index    one receive buffer per descriptor index
//   kEventArea + 16 * index     event buffers
// so guest memory must reach kMemoryNeeded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"
#include "src/devices/virtio/vsock/packet.h"

namespace ember::virtio::testing {

struct VsockPacket {
  vsock::PacketHeader header;
  std::vector<uint8_t> payload;
};

class VsockDriver {
 public:
  static constexpr uint64_t kTxArea = 0x100000;
  static constexpr uint64_t kTxAreaSize = 0x100000;
  static constexpr uint64_t kRxArea = 0x200000;
  static constexpr uint64_t kRxStride = 0x10000;
  static constexpr uint64_t kEventArea = 0x1300000;
  static constexpr uint64_t kMemoryNeeded = 0x1400000;

  VsockDriver(MmioTransport& transport, const GuestMemory& mem, uint64_t guest_cid);

  // The virtio init sequence with every offered feature; the status.
  uint32_t Init(uint16_t queue_size = 256);
  MmioDriver& mmio() { return mmio_; }

  // A header from the guest's address to the host's, with the guest's
  // credit (buf_alloc, fwd_cnt below).
  vsock::PacketHeader Header(uint32_t src_port, uint32_t dst_port, uint16_t op) const;
  // Sends `h` with `payload` (len set to its size), cut into descriptors
  // at the byte offsets in `cuts`, and kicks the transmit queue.
  void Send(vsock::PacketHeader h, std::span<const uint8_t> payload = {},
            const std::vector<size_t>& cuts = {});
  // Sends raw bytes as a chain (header or not), as a hostile driver may.
  void SendBytes(std::span<const uint8_t> bytes, const std::vector<size_t>& cuts = {},
                 bool writable = false);

  // Gives `n` receive buffers of `size` bytes (at most kRxStride), each
  // cut at `cuts`, and kicks the receive queue.
  void AddRxBuffers(size_t n, uint32_t size = 4096, const std::vector<size_t>& cuts = {});
  size_t rx_buffers_given() const { return rx_chains_.size(); }
  // The next receive buffer the device returned, parsed; nullopt if none.
  std::optional<VsockPacket> Receive();
  std::vector<VsockPacket> ReceiveAll();

  void AddEventBuffer(uint32_t size = 8, bool kick = true);
  // The event id in the next event buffer returned, if any.
  std::optional<uint32_t> ReceiveEvent();

  // The guest's credit, sent in every Header().
  uint32_t buf_alloc = 256 * 1024;
  uint32_t fwd_cnt = 0;

 private:
  // Index of the next free descriptor in queue `q`, as DriverQueue::Add
  // hands them out (in order, wrapping).
  uint16_t Reserve(size_t q, size_t n);

  MmioTransport& transport_;
  const GuestMemory& mem_;
  MmioDriver mmio_;
  uint64_t guest_cid_;
  uint16_t queue_size_ = 0;
  uint16_t next_desc_[3] = {};
  uint64_t tx_cursor_ = kTxArea;
  std::map<uint16_t, std::vector<Buffer>> rx_chains_;  // by head
  std::map<uint16_t, uint64_t> event_buffers_;
};

}  // namespace ember::virtio::testing
