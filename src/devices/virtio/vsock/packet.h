// virtio-vsock packets (virtio 1.2, 5.10.6): the 44-byte little-endian
// header and where a packet lies in a descriptor chain. The guest may cut
// header and payload across its descriptors anyway it likes; these helpers
// gather them, and say "malformed" rather than trust a length.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "src/devices/virtio/queue.h"
#include "src/vstate/guest_memory.h"

namespace ember::virtio::vsock {

inline constexpr uint64_t kHostCid = 2;
inline constexpr size_t kHeaderSize = 44;
// The largest payload either side puts in one packet (Linux's
// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE, Firecracker's MAX_PKT_BUF_SIZE).
inline constexpr uint32_t kMaxPayload = 64 * 1024;

inline constexpr uint16_t kTypeStream = 1;

enum Op : uint16_t {
  kOpRequest = 1,
  kOpResponse = 2,
  kOpRst = 3,
  kOpShutdown = 4,
  kOpRw = 5,
  kOpCreditUpdate = 6,
  kOpCreditRequest = 7,
};

// SHUTDOWN flags: the sender will receive (RCV) or send (SEND) no more.
inline constexpr uint32_t kShutdownRcv = 1;
inline constexpr uint32_t kShutdownSend = 2;
inline constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

struct PacketHeader {
  uint64_t src_cid = 0, dst_cid = 0;
  uint32_t src_port = 0, dst_port = 0;
  uint32_t len = 0;
  uint16_t type = kTypeStream, op = 0;
  uint32_t flags = 0, buf_alloc = 0, fwd_cnt = 0;

  void Encode(uint8_t out[kHeaderSize]) const;
  static PacketHeader Decode(const uint8_t in[kHeaderSize]);
  friend bool operator==(const PacketHeader&, const PacketHeader&) = default;
};

// A packet the guest put on its transmit queue: the header, and its
// payload where it lies in guest memory (exactly `header.len` bytes).
struct TxPacket {
  PacketHeader header;
  std::vector<iovec> payload;
};

enum class TxError {
  kMalformed,       // a writable or unmappable buffer, or under a header's worth
  kPayloadTooLong,  // len over kMaxPayload or over what the chain holds
};

// Reads a packet out of a transmit chain. On kPayloadTooLong the header
// was read (*header set) and can be answered.
std::optional<TxPacket> ReadTxPacket(const GuestMemory& mem, const DescriptorChain& chain,
                                     TxError* error, PacketHeader* header);

// A receive chain split for one packet: its first kHeaderSize writable
// bytes for the header and the rest as payload space.
struct RxBuffer {
  std::vector<iovec> header;
  std::vector<iovec> payload;
  size_t payload_size = 0;
};

// Nullopt when the chain has a read-only or unmappable buffer or fewer
// than kHeaderSize bytes.
std::optional<RxBuffer> SplitRxChain(const GuestMemory& mem, const DescriptorChain& chain);

// Writes `header` into the buffer's header space.
void WriteHeader(const RxBuffer& buffer, const PacketHeader& header);

}  // namespace ember::virtio::vsock
