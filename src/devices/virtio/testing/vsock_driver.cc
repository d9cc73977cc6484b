#include "src/devices/virtio/testing/vsock_driver.h"

#include <algorithm>
#include <cstdlib>

namespace ember::virtio::testing {
namespace {

// [0, size) cut at `cuts` (ignoring any out of order or range).
std::vector<std::pair<size_t, size_t>> Pieces(size_t size, const std::vector<size_t>& cuts) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t at = 0;
  for (size_t cut : cuts) {
    if (cut <= at || cut >= size) continue;
    out.push_back({at, cut - at});
    at = cut;
  }
  out.push_back({at, size - at});
  return out;
}

}  // namespace

VsockDriver::VsockDriver(MmioTransport& transport, const GuestMemory& mem, uint64_t guest_cid)
    : transport_(transport), mem_(mem), mmio_(transport, mem, 0x10000), guest_cid_(guest_cid) {}

uint32_t VsockDriver::Init(uint16_t queue_size) {
  uint32_t status = mmio_.Init(~0ull, queue_size);
  queue_size_ = transport_.num_queues() > 0 ? mmio_.queue(0).size() : 0;
  for (uint16_t& d : next_desc_) d = 0;
  rx_chains_.clear();
  event_buffers_.clear();
  return status;
}

uint16_t VsockDriver::Reserve(size_t q, size_t n) {
  uint16_t first = next_desc_[q];
  next_desc_[q] = static_cast<uint16_t>((next_desc_[q] + n) % queue_size_);
  return first;
}

vsock::PacketHeader VsockDriver::Header(uint32_t src_port, uint32_t dst_port, uint16_t op) const {
  vsock::PacketHeader h;
  h.src_cid = guest_cid_;
  h.dst_cid = vsock::kHostCid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.op = op;
  h.type = vsock::kTypeStream;
  h.buf_alloc = buf_alloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

void VsockDriver::Send(vsock::PacketHeader h, std::span<const uint8_t> payload,
                       const std::vector<size_t>& cuts) {
  h.len = static_cast<uint32_t>(payload.size());
  std::vector<uint8_t> bytes(vsock::kHeaderSize);
  h.Encode(bytes.data());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  SendBytes(bytes, cuts);
}

void VsockDriver::SendBytes(std::span<const uint8_t> bytes, const std::vector<size_t>& cuts,
                            bool writable) {
  if (tx_cursor_ + bytes.size() + 64 > kTxArea + kTxAreaSize) tx_cursor_ = kTxArea;
  std::vector<Buffer> chain;
  for (auto [at, len] : Pieces(bytes.size(), cuts)) {
    if (!mem_.Write(tx_cursor_, bytes.subspan(at, len)).ok()) std::abort();
    chain.push_back({tx_cursor_, static_cast<uint32_t>(len), writable});
    tx_cursor_ += len;
  }
  tx_cursor_ = (tx_cursor_ + 15) & ~15ull;
  Reserve(1, chain.size());
  mmio_.queue(1).Add(chain);
  mmio_.Kick(1);
  while (mmio_.queue(1).PopUsed()) {
  }
}

void VsockDriver::AddRxBuffers(size_t n, uint32_t size, const std::vector<size_t>& cuts) {
  size = std::min<uint32_t>(size, kRxStride);
  for (size_t i = 0; i < n; i++) {
    std::vector<std::pair<size_t, size_t>> pieces = Pieces(size, cuts);
    uint16_t head = Reserve(0, pieces.size());
    std::vector<Buffer> chain;
    for (size_t p = 0; p < pieces.size(); p++) {
      uint16_t index = static_cast<uint16_t>((head + p) % queue_size_);
      chain.push_back({kRxArea + kRxStride * index, static_cast<uint32_t>(pieces[p].second), true});
    }
    mmio_.queue(0).Add(chain);
    rx_chains_[head] = chain;
  }
  mmio_.Kick(0);
}

std::optional<VsockPacket> VsockDriver::Receive() {
  std::optional<UsedElement> used = mmio_.queue(0).PopUsed();
  if (!used) return std::nullopt;
  auto it = rx_chains_.find(static_cast<uint16_t>(used->id));
  if (it == rx_chains_.end()) std::abort();  // the device returned a buffer it was not given
  std::vector<uint8_t> bytes;
  size_t left = used->len;
  for (const Buffer& b : it->second) {
    size_t n = std::min<size_t>(left, b.len);
    std::vector<uint8_t> part(n);
    if (!mem_.Read(b.addr, part).ok()) std::abort();
    bytes.insert(bytes.end(), part.begin(), part.end());
    left -= n;
  }
  rx_chains_.erase(it);
  VsockPacket p;
  if (bytes.size() < vsock::kHeaderSize) {
    p.header.op = 0;  // returned empty
    return p;
  }
  p.header = vsock::PacketHeader::Decode(bytes.data());
  p.payload.assign(bytes.begin() + vsock::kHeaderSize, bytes.end());
  return p;
}

std::vector<VsockPacket> VsockDriver::ReceiveAll() {
  std::vector<VsockPacket> out;
  while (std::optional<VsockPacket> p = Receive()) out.push_back(std::move(*p));
  return out;
}

void VsockDriver::AddEventBuffer(uint32_t size, bool kick) {
  uint16_t head = Reserve(2, 1);
  uint64_t addr = kEventArea + 16ull * head;
  if (!mem_.WriteObj<uint32_t>(addr, 0xffffffff).ok()) std::abort();
  mmio_.queue(2).Add({{addr, size, true}});
  event_buffers_[head] = addr;
  if (kick) mmio_.Kick(2);
}

std::optional<uint32_t> VsockDriver::ReceiveEvent() {
  std::optional<UsedElement> used = mmio_.queue(2).PopUsed();
  if (!used) return std::nullopt;
  auto it = event_buffers_.find(static_cast<uint16_t>(used->id));
  if (it == event_buffers_.end()) std::abort();
  uint32_t id = *mem_.ReadObj<uint32_t>(it->second);
  event_buffers_.erase(it);
  return id;
}

}  // namespace ember::virtio::testing
