#include "src/devices/virtio/net/net_device.h"

#include <linux/if_tun.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/log.h"

namespace ember::virtio::net {
namespace {

constexpr size_t kNumBuffersOffset = 10;  // in struct virtio_net_hdr_v1


}  // namespace

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::Create(const NetConfig& config) {
  absl::StatusOr<Tap> tap = Tap::Open(config.host_dev_name);
  if (!tap.ok()) {
    return absl::Status(tap.status().code(),
                        absl::StrCat("network interface ", config.iface_id, ": ",
                                     tap.status().message()));
  }
  return std::unique_ptr<NetDevice>(new NetDevice(config, std::move(*tap)));
}

uint64_t NetDevice::features() const {
  uint64_t f = kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc | kFeatureCsum |
               kFeatureGuestCsum | kFeatureGuestTso4 | kFeatureGuestTso6 | kFeatureHostTso4 |
               kFeatureHostTso6 | kFeatureMrgRxbuf;
  if (config_.guest_mac) f |= kFeatureMac;
  return f;
}

void NetDevice::AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const {
  VirtioDevice::AppendMetrics(out);
  const NetCounters& c = net_counters_;
  out->insert(out->end(), {{"rx_packets", c.rx_packets}, {"rx_bytes", c.rx_bytes},
                           {"rx_dropped", c.rx_dropped}, {"tx_packets", c.tx_packets},
                           {"tx_bytes", c.tx_bytes}, {"tx_dropped", c.tx_dropped},
                           {"tap_errors", c.tap_errors}});
}

uint32_t NetDevice::backend_events() const { return EPOLLIN | EPOLLET; }

void NetDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // `mac` (6 bytes at 0) is the only field Ember offers.
  for (size_t i = 0; i < data.size(); i++) {
    uint64_t at = offset + i;
    data[i] = config_.guest_mac && at < 6 ? (*config_.guest_mac)[at] : 0;
  }
}

absl::Status NetDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                 Interrupt* interrupt, uint64_t features) {
  if (queues.size() != 2 || !queues[kRxQueue].ready() || !queues[kTxQueue].ready()) {
    return absl::InvalidArgumentError("virtio-net needs its receive and transmit queues ready");
  }
  // The TAP may hand the guest only the offloads the guest accepted.
  unsigned offload = 0;
  if (features & kFeatureGuestCsum) {
    offload |= TUN_F_CSUM;
    if (features & kFeatureGuestTso4) offload |= TUN_F_TSO4;
    if (features & kFeatureGuestTso6) offload |= TUN_F_TSO6;
  }
  if (absl::Status st = tap_.SetOffload(offload); !st.ok()) return st;
  mem_ = &mem;
  rx_ = &queues[kRxQueue];
  tx_ = &queues[kTxQueue];
  interrupt_ = interrupt;
  mergeable_ = features & kFeatureMrgRxbuf;
  pending_len_ = 0;
  Receive();  // frames that arrived before the driver was ready
  return absl::OkStatus();
}

void NetDevice::Reset() {
  mem_ = nullptr;
  rx_ = tx_ = nullptr;
  interrupt_ = nullptr;
  pending_len_ = 0;
}

void NetDevice::ProcessQueue(size_t index) {
  if (mem_ == nullptr) return;
  if (index == kTxQueue) Transmit();
  if (index == kRxQueue) Receive();  // the guest added receive buffers
}

void NetDevice::ProcessBackend(uint32_t events) {
  if (mem_ == nullptr) return;
  if (events & (EPOLLERR | EPOLLHUP)) TapError("hung up (deleted?)", EIO);
  if (events & EPOLLIN) Receive();
}

void NetDevice::DrainBackend(uint32_t events) {
  if (events & (EPOLLERR | EPOLLHUP)) TapError("hung up (deleted?)", EIO);
}

void NetDevice::TapError(const char* what, int err) {
  // A guest's frames can make writes fail as often as it sends them.
  net_counters_.tap_errors++;
  LOG_WARN_RATELIMITED("network interface %s: TAP %s %s: %s", config_.iface_id, tap_.name(),
                       what, std::strerror(err));
  // These mean the TAP is gone; the guest's link is dead but the VM lives.
  if (err == EBADFD || err == ENODEV || err == EIO || err == ENXIO) {
    if (!tap_failed_) {
      LOG_WARN("network interface %s: TAP %s is gone; the guest's link is down",
               config_.iface_id, tap_.name());
    }
    tap_failed_ = true;
  }
}

void NetDevice::Transmit() {
  std::vector<iovec> iov;
  for (;;) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = tx_->Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;
    iov.clear();
    size_t total = 0;
    bool bad = false;
    for (const Descriptor& d : (*chain)->descriptors) {
      absl::StatusOr<std::span<uint8_t>> s = mem_->Slice(d.addr, d.len);
      if (d.device_writable || !s.ok()) bad = true;
      if (s.ok()) iov.push_back({s->data(), s->size()});
      total += d.len;
    }
    if (bad || total < kHeaderSize || total > kMaxPacket) {
      counters_.request_errors++;
      net_counters_.tx_dropped++;
    } else if (tap_failed_) {
      net_counters_.tx_dropped++;
    } else {
      ssize_t n;
      do {
        n = writev(tap_.fd(), iov.data(), static_cast<int>(iov.size()));
      } while (n < 0 && errno == EINTR);
      if (n >= 0) {
        net_counters_.tx_packets++;
        net_counters_.tx_bytes += total - kHeaderSize;
      } else {
        net_counters_.tx_dropped++;  // a full TAP drops, like a busy wire
        if (errno != EAGAIN) TapError("write failed", errno);
      }
    }
    if (!tx_->AddUsed(*mem_, (*chain)->head, 0).ok()) break;
  }
  SignalUsed(*tx_, *mem_, interrupt_);
}

void NetDevice::Receive() {
  if (tap_failed_ || rx_ == nullptr) return;
  bool delivered = false;
  for (;;) {
    if (pending_len_ == 0) {
      ssize_t n = read(tap_.fd(), frame_.data(), frame_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        if (errno != EAGAIN) TapError("read failed", errno);
        break;
      }
      if (static_cast<size_t>(n) < kHeaderSize) {
        net_counters_.rx_dropped++;
        continue;
      }
      pending_len_ = n;
    }
    // Out of receive buffers: keep the frame until the guest adds some.
    if (!DeliverPending()) break;
    pending_len_ = 0;
    delivered = true;
  }
  if (delivered) SignalUsed(*rx_, *mem_, interrupt_);
}

bool NetDevice::DeliverPending() {
  struct Used {
    uint16_t head;
    uint32_t len;
  };
  std::vector<Used> used;
  uint64_t num_buffers_addr = 0;
  size_t offset = 0;
  bool malformed = false;
  while (offset < pending_len_ && !malformed) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = rx_->Pop(*mem_);
    if (!chain.ok()) return false;  // broken: the transport reports it
    if (!chain->has_value()) {
      for (size_t i = 0; i < used.size(); i++) rx_->Undo();
      return false;
    }
    uint32_t written = 0;
    for (const Descriptor& d : (*chain)->descriptors) {
      // The header must start in one buffer big enough for all of it.
      if (!d.device_writable || (used.empty() && written == 0 && d.len < kHeaderSize)) {
        malformed = true;
        break;
      }
      if (used.empty() && written == 0) num_buffers_addr = d.addr + kNumBuffersOffset;
      size_t take = std::min<size_t>(d.len, pending_len_ - offset);
      if (!mem_->Write(d.addr, std::span(frame_.data() + offset, take)).ok()) {
        malformed = true;
        break;
      }
      offset += take;
      written += take;
      if (offset == pending_len_) break;
    }
    used.push_back({(*chain)->head, written});
    if (!mergeable_) break;  // one chain must hold the whole frame
  }
  if (malformed || offset < pending_len_) {
    // Give the buffers back empty and drop the frame.
    if (malformed) counters_.request_errors++;
    net_counters_.rx_dropped++;
    for (const Used& u : used) (void)rx_->AddUsed(*mem_, u.head, 0);
    return true;
  }
  (void)mem_->WriteObj<uint16_t>(num_buffers_addr, static_cast<uint16_t>(used.size()));
  for (const Used& u : used) {
    if (!rx_->AddUsed(*mem_, u.head, u.len).ok()) break;
  }
  net_counters_.rx_packets++;
  net_counters_.rx_bytes += pending_len_ - kHeaderSize;
  return true;
}

}  // namespace ember::virtio::net
