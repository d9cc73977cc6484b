#include "src/devices/virtio/vsock/packet.h"

#include <cstring>

namespace ember::virtio::vsock {
namespace {

template <typename T>
void Put(uint8_t* at, T v) {
  for (size_t i = 0; i < sizeof(T); i++) at[i] = static_cast<uint8_t>(uint64_t{v} >> (8 * i));
}

template <typename T>
T Get(const uint8_t* at) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v |= uint64_t{at[i]} << (8 * i);
  return static_cast<T>(v);
}

// The chain's buffers of one direction as host iovecs, or false when one
// is of the other direction or not mappable.
bool Map(const GuestMemory& mem, const DescriptorChain& chain, bool writable,
         std::vector<iovec>* out, size_t* total) {
  *total = 0;
  for (const Descriptor& d : chain.descriptors) {
    if (d.device_writable != writable) return false;
    if (d.len == 0) continue;
    absl::StatusOr<std::span<uint8_t>> s = mem.Slice(d.addr, d.len);
    if (!s.ok()) return false;
    out->push_back({s->data(), s->size()});
    *total += s->size();
  }
  return true;
}

// Moves the first `n` bytes of `all` into `head`; the rest stays in `rest`.
void Cut(const std::vector<iovec>& all, size_t n, std::vector<iovec>* head,
         std::vector<iovec>* rest, size_t rest_limit) {
  for (const iovec& v : all) {
    auto* base = static_cast<uint8_t*>(v.iov_base);
    size_t len = v.iov_len;
    size_t take = std::min(len, n);
    if (take > 0) head->push_back({base, take});
    n -= take;
    base += take;
    len -= take;
    size_t keep = std::min(len, rest_limit);
    if (keep > 0) rest->push_back({base, keep});
    rest_limit -= keep;
  }
}

}  // namespace

void PacketHeader::Encode(uint8_t out[kHeaderSize]) const {
  Put(out + 0, src_cid);
  Put(out + 8, dst_cid);
  Put(out + 16, src_port);
  Put(out + 20, dst_port);
  Put(out + 24, len);
  Put(out + 28, type);
  Put(out + 30, op);
  Put(out + 32, flags);
  Put(out + 36, buf_alloc);
  Put(out + 40, fwd_cnt);
}

PacketHeader PacketHeader::Decode(const uint8_t in[kHeaderSize]) {
  PacketHeader h;
  h.src_cid = Get<uint64_t>(in + 0);
  h.dst_cid = Get<uint64_t>(in + 8);
  h.src_port = Get<uint32_t>(in + 16);
  h.dst_port = Get<uint32_t>(in + 20);
  h.len = Get<uint32_t>(in + 24);
  h.type = Get<uint16_t>(in + 28);
  h.op = Get<uint16_t>(in + 30);
  h.flags = Get<uint32_t>(in + 32);
  h.buf_alloc = Get<uint32_t>(in + 36);
  h.fwd_cnt = Get<uint32_t>(in + 40);
  return h;
}

std::optional<TxPacket> ReadTxPacket(const GuestMemory& mem, const DescriptorChain& chain,
                                     TxError* error, PacketHeader* header) {
  std::vector<iovec> all;
  size_t total = 0;
  if (!Map(mem, chain, /*writable=*/false, &all, &total) || total < kHeaderSize) {
    *error = TxError::kMalformed;
    return std::nullopt;
  }
  std::vector<iovec> head;
  TxPacket packet;
  Cut(all, kHeaderSize, &head, &packet.payload, total);
  uint8_t bytes[kHeaderSize];
  size_t at = 0;
  for (const iovec& v : head) {
    std::memcpy(bytes + at, v.iov_base, v.iov_len);
    at += v.iov_len;
  }
  packet.header = PacketHeader::Decode(bytes);
  *header = packet.header;
  if (packet.header.len > kMaxPayload || packet.header.len > total - kHeaderSize) {
    *error = TxError::kPayloadTooLong;
    return std::nullopt;
  }
  // Only `len` bytes are the payload; the guest may give a bigger buffer.
  std::vector<iovec> payload;
  std::vector<iovec> none;
  Cut(packet.payload, packet.header.len, &payload, &none, 0);
  packet.payload = std::move(payload);
  return packet;
}

std::optional<RxBuffer> SplitRxChain(const GuestMemory& mem, const DescriptorChain& chain) {
  std::vector<iovec> all;
  size_t total = 0;
  if (!Map(mem, chain, /*writable=*/true, &all, &total) || total < kHeaderSize) {
    return std::nullopt;
  }
  RxBuffer buffer;
  Cut(all, kHeaderSize, &buffer.header, &buffer.payload, total);
  buffer.payload_size = total - kHeaderSize;
  return buffer;
}

void WriteHeader(const RxBuffer& buffer, const PacketHeader& header) {
  uint8_t bytes[kHeaderSize];
  header.Encode(bytes);
  size_t at = 0;
  for (const iovec& v : buffer.header) {
    std::memcpy(v.iov_base, bytes + at, v.iov_len);
    at += v.iov_len;
  }
}

}  // namespace ember::virtio::vsock
