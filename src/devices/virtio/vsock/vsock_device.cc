#include "src/devices/virtio/vsock/vsock_device.h"

#include <sys/epoll.h>

#include "absl/strings/str_cat.h"
#include "src/common/byte_codec.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::vsock {
namespace {

// The encoding of SaveDeviceState, field by field after its version.
constexpr uint16_t kStateVersion = 1;

}  // namespace

absl::StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(const VsockConfig& config) {
  return Create(config, VsockLimits{});
}

absl::StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(const VsockConfig& config,
                                                                 const VsockLimits& limits) {
  auto dev = std::unique_ptr<VsockDevice>(new VsockDevice(config));
  ASSIGN_OR_RETURN(dev->muxer_, Muxer::Create(config, limits, &dev->vsock_counters_));
  return dev;
}

void VsockDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  uint64_t cid = config_.guest_cid;
  for (size_t i = 0; i < data.size(); i++) {
    uint64_t at = offset + i;
    data[i] = at < 8 ? static_cast<uint8_t>(cid >> (8 * at)) : 0;
  }
}

uint32_t VsockDevice::backend_events() const { return EPOLLIN; }

absl::Status VsockDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                   Interrupt* interrupt, uint64_t) {
  if (queues.size() != 3) return absl::InvalidArgumentError("virtio-vsock has three queues");
  for (const Queue& q : queues) {
    if (!q.ready()) return absl::InvalidArgumentError("virtio-vsock needs all its queues ready");
  }
  mem_ = &mem;
  queues_ = queues;
  interrupt_ = interrupt;
  muxer_->Start();
  return absl::OkStatus();
}

void VsockDevice::Reset() {
  muxer_->Stop();
  mem_ = nullptr;
  queues_ = {};
  interrupt_ = nullptr;
  reset_owed_ = reset_unacked_ = false;
}

void VsockDevice::ProcessQueue(size_t index) {
  if (mem_ == nullptr) return;
  muxer_->Settle();
  if (index == kTxQueue) ProcessTx();
  // An event buffer given: for a reset owed, or back from a guest that
  // took ours (ProcessRx sees that). A notification without one, such as
  // the transport's replay after a restore, is no ack.
  if (index == kEventQueue) SendTransportReset();
  ProcessRx();  // new receive buffers, or answers to what the guest sent
}

void VsockDevice::ProcessBackend(uint32_t) {
  if (mem_ == nullptr) return;
  muxer_->Poll();
  ProcessRx();
}

void VsockDevice::DrainBackend(uint32_t) { muxer_->Drain(); }

void VsockDevice::ProcessTx() {
  Queue& tx = queues_[kTxQueue];
  bool used = false;
  for (;;) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = tx.Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;
    TxError error;
    PacketHeader header;
    std::optional<TxPacket> packet = ReadTxPacket(*mem_, **chain, &error, &header);
    if (packet) {
      muxer_->FromGuest(*packet);
    } else {
      counters_.request_errors++;
      vsock_counters_.bad_packets++;
      if (error == TxError::kPayloadTooLong) {
        LOG_WARN_RATELIMITED("vsock: a guest packet of %d bytes (op %d) in a smaller chain or "
                             "over %d; reset", header.len, header.op, kMaxPayload);
        muxer_->RejectFromGuest(header);
      } else {
        LOG_WARN_RATELIMITED("vsock: a guest transmit chain without a readable %d-byte header",
                             kHeaderSize);
      }
    }
    used = true;
    if (!tx.AddUsed(*mem_, (*chain)->head, 0).ok()) break;
  }
  if (used) SignalUsed(tx, *mem_, interrupt_);
}

void VsockDevice::ProcessRx() {
  // Nothing before the guest has dropped its old streams (Firecracker
  // holds the receive queue the same way).
  if (reset_unacked_ && EventAvailIdx() != reset_avail_idx_) reset_unacked_ = false;
  if (reset_owed_ || reset_unacked_) return;
  Queue& rx = queues_[kRxQueue];
  bool used = false;
  while (muxer_->HasRx()) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = rx.Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;
    uint16_t head = (*chain)->head;
    std::optional<RxBuffer> buffer = SplitRxChain(*mem_, **chain);
    std::optional<PacketHeader> packet;
    if (buffer) packet = muxer_->NextRx(*buffer);
    if (!packet && buffer && !muxer_->HasRx()) {
      rx.Undo();  // nothing after all (a host socket had no data): keep it
      break;
    }
    uint32_t len = 0;
    if (packet) {
      WriteHeader(*buffer, *packet);
      len = static_cast<uint32_t>(kHeaderSize + packet->len);
    } else {
      // Read-only, unmappable or too small for any packet waiting: back empty.
      vsock_counters_.bad_rx_buffers++;
      counters_.request_errors++;
      LOG_WARN_RATELIMITED("vsock: a guest receive chain that cannot hold the next packet");
    }
    used = true;
    if (!rx.AddUsed(*mem_, head, len).ok()) break;
  }
  if (used) SignalUsed(rx, *mem_, interrupt_);
}

uint16_t VsockDevice::EventAvailIdx() const {
  return queues_[kEventQueue].AvailIdx(*mem_).value_or(reset_avail_idx_);
}

void VsockDevice::SendTransportReset() {
  if (!reset_owed_ || mem_ == nullptr) return;
  Queue& ev = queues_[kEventQueue];
  bool used = false;
  while (reset_owed_) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = ev.Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;
    const std::vector<Descriptor>& d = (*chain)->descriptors;
    uint32_t len = 0;
    if (!d.empty() && d[0].device_writable && d[0].len >= 4 &&
        mem_->WriteObj<uint32_t>(d[0].addr, kEventTransportReset).ok()) {
      len = 4;
      reset_owed_ = false;
      reset_unacked_ = true;
      // Linux gives several event buffers and EVENT_IDX asked for a kick only
      // past the one taken: without this its refill, the ack, goes unheard
      // and a host connection waits for the next unrelated wakeup. Asked
      // before the event is published, so the guest cannot refill first.
      reset_avail_idx_ = ev.NotifyOnNextAvail(*mem_).value_or(EventAvailIdx());
      vsock_counters_.transport_resets++;
    } else {
      vsock_counters_.ev_queue_event_fails++;
      LOG_WARN_RATELIMITED("vsock: a guest event buffer that cannot hold an event");
    }
    used = true;
    if (!ev.AddUsed(*mem_, (*chain)->head, len).ok()) break;
  }
  if (used) SignalUsed(ev, *mem_, interrupt_);
}

std::vector<uint8_t> VsockDevice::SaveDeviceState() const {
  ByteWriter w;
  w.U16(kStateVersion);
  w.U64(config_.guest_cid);
  w.U32(muxer_->local_port_last());
  return w.Take();
}

absl::Status VsockDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  ByteReader r(state);
  uint16_t version = 0;
  uint64_t cid = 0;
  uint32_t port_last = 0;
  if (!r.U16(&version)) return r.Finish("virtio-vsock state");
  if (version != kStateVersion) {
    return absl::InvalidArgumentError(absl::StrCat("virtio-vsock state version ", version,
                                                   "; this Ember reads version ", kStateVersion));
  }
  r.U64(&cid);
  r.U32(&port_last);
  RETURN_IF_ERROR(r.Finish("virtio-vsock state"));
  if (cid != config_.guest_cid) {
    return absl::InvalidArgumentError(absl::StrCat("virtio-vsock state: guest CID ", cid,
                                                   ", but the device has CID ", config_.guest_cid));
  }
  muxer_->set_local_port_last(port_last);
  // The guest still believes in streams this process never had; a guest
  // without a driver has none.
  reset_owed_ = mem_ != nullptr;
  reset_unacked_ = false;
  SendTransportReset();
  return absl::OkStatus();
}

void VsockDevice::AppendMetrics(MetricValues* out) const {
  VirtioDevice::AppendMetrics(out);
  const VsockCounters& c = vsock_counters_;
  out->insert(out->end(), {{"rx_queue_event_count", counters_.queue_events[kRxQueue]},
                           {"tx_queue_event_count", counters_.queue_events[kTxQueue]},
                           {"rx_bytes_count", c.rx_bytes_count},
                           {"tx_bytes_count", c.tx_bytes_count},
                           {"rx_packets_count", c.rx_packets_count},
                           {"tx_packets_count", c.tx_packets_count},
                           {"conns_added", c.conns_added},
                           {"conns_killed", c.conns_killed},
                           {"conns_removed", c.conns_removed},
                           {"rx_read_fails", c.rx_read_fails},
                           {"tx_write_fails", c.tx_write_fails},
                           {"tx_flush_fails", c.tx_flush_fails},
                           {"ev_queue_event_fails", c.ev_queue_event_fails},
                           {"conns_refused", c.conns_refused},
                           {"bad_packets", c.bad_packets},
                           {"credit_violations", c.credit_violations},
                           {"rst_sent", c.rst_sent},
                           {"rst_dropped", c.rst_dropped},
                           {"bad_rx_buffers", c.bad_rx_buffers},
                           {"transport_resets", c.transport_resets}});
}

void VsockDevice::AppendLevels(MetricValues* out) const {
  out->emplace_back("conns", muxer_->connections());
}

}  // namespace ember::virtio::vsock
