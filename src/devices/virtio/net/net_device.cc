#include "src/devices/virtio/net/net_device.h"

#include <linux/if_tun.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::net {
namespace {

constexpr size_t kNumBuffersOffset = 10;  // in struct virtio_net_hdr_v1
constexpr uint8_t kHeaderNeedsCsum = 1;   // VIRTIO_NET_HDR_F_NEEDS_CSUM (5.1.6)

}  // namespace

absl::StatusOr<Tap> NetDevice::OpenTap(const NetConfig& config) {
  absl::StatusOr<Tap> tap = Tap::Open(config.host_dev_name);
  if (!tap.ok()) {
    return absl::Status(tap.status().code(),
                        absl::StrCat("Could not create the network device: ",
                                     tap.status().message(), " (network-interfaces[",
                                     config.iface_id, "].host_dev_name)"));
  }
  return tap;
}

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::Create(const NetConfig& config,
                                                             std::optional<Tap> tap) {
  if (!tap) {
    ASSIGN_OR_RETURN(tap, OpenTap(config));
  }
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) {
    return ErrnoStatus(absl::StrCat("network interface ", config.iface_id, ": timerfd_create"));
  }
  return std::unique_ptr<NetDevice>(new NetDevice(config, std::move(*tap), std::move(timer)));
}

NetDevice::NetDevice(NetConfig config, Tap tap, UniqueFd timer)
    : config_(std::move(config)),
      tap_(std::move(tap)),
      rx_limiter_(config_.rx_rate_limiter, MonotonicNs()),
      tx_limiter_(config_.tx_rate_limiter, MonotonicNs()),
      timer_(std::move(timer)) {}

uint64_t NetDevice::features() const {
  uint64_t f = kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc | kFeatureCsum |
               kFeatureGuestCsum | kFeatureGuestTso4 | kFeatureGuestTso6 | kFeatureHostTso4 |
               kFeatureHostTso6 | kFeatureMrgRxbuf;
  if (config_.guest_mac) f |= kFeatureMac;
  if (config_.mtu) f |= kFeatureMtu;
  return f;
}

void NetDevice::AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const {
  VirtioDevice::AppendMetrics(out);
  const NetCounters& c = net_counters_;
  out->insert(out->end(), {{"rx_packets_count", c.rx_packets}, {"rx_bytes_count", c.rx_bytes},
                           {"rx_dropped", c.rx_dropped}, {"tx_packets_count", c.tx_packets},
                           {"tx_bytes_count", c.tx_bytes}, {"tx_dropped", c.tx_dropped},
                           {"tap_errors", c.tap_errors},
                           {"rx_queue_event_count", counters_.queue_events[kRxQueue]},
                           {"tx_queue_event_count", counters_.queue_events[kTxQueue]},
                           {"rx_rate_limiter_throttled", c.rx_rate_limiter_throttled},
                           {"tx_rate_limiter_throttled", c.tx_rate_limiter_throttled},
                           {"rx_event_rate_limiter_count", c.rx_event_rate_limiter_count},
                           {"tx_rate_limiter_event_count", c.tx_rate_limiter_event_count}});
}

uint32_t NetDevice::backend_events() const { return EPOLLIN | EPOLLET; }

void NetDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // struct virtio_net_config (5.1.4): `mac` at 0 and `mtu` (le16) at 10
  // are the fields Ember offers; status and max_virtqueue_pairs read 0.
  constexpr uint64_t kMtuOffset = 10;
  for (size_t i = 0; i < data.size(); i++) {
    uint64_t at = offset + i;
    uint8_t byte = 0;
    if (config_.guest_mac && at < 6) byte = (*config_.guest_mac)[at];
    if (config_.mtu && (at == kMtuOffset || at == kMtuOffset + 1)) {
      byte = static_cast<uint8_t>(*config_.mtu >> (8 * (at - kMtuOffset)));
    }
    data[i] = byte;
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
  ArmTimer(timer_.get(), 0);
  armed_until_ns_ = rx_until_ = tx_until_ = 0;
}

std::vector<uint8_t> NetDevice::SaveDeviceState() const {
  return SaveLimiters({&rx_limiter_, &tx_limiter_});
}

absl::Status NetDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  RETURN_IF_ERROR(RestoreLimiters(state, {&rx_limiter_, &tx_limiter_}, "virtio-net"));
  uint64_t now = MonotonicNs();
  ArmFor(now + 1, now);
  return absl::OkStatus();
}

void NetDevice::UpdateRateLimiters(const std::optional<RateLimiterUpdate>& rx,
                                   const std::optional<RateLimiterUpdate>& tx) {
  uint64_t now = MonotonicNs();
  if (rx) {
    rx_limiter_.Update(*rx, now);
    config_.rx_rate_limiter = ApplyUpdate(config_.rx_rate_limiter, *rx);
    rx_until_ = 0;
  }
  if (tx) {
    tx_limiter_.Update(*tx, now);
    config_.tx_rate_limiter = ApplyUpdate(config_.tx_rate_limiter, *tx);
    tx_until_ = 0;
  }
  // Whatever waited may go now: the timer brings the loop back at once
  // (and no later wait set meanwhile may postpone that).
  armed_until_ns_ = 0;
  ArmFor(now + 1, now);
}

bool NetDevice::Admit(RateLimiter& limiter, uint64_t bytes, uint64_t* until) {
  uint64_t now = MonotonicNs();
  if (limiter.Consume(1, bytes, now)) return true;
  *until = limiter.blocked_until_ns();
  ArmFor(*until, now);
  return false;
}

void NetDevice::ArmFor(uint64_t until_ns, uint64_t now_ns) {
  // One timer for both directions: set for whichever may go on first.
  if (armed_until_ns_ != 0 && armed_until_ns_ <= until_ns) return;
  armed_until_ns_ = until_ns;
  ArmTimer(timer_.get(), until_ns > now_ns ? until_ns - now_ns : 1);
}

void NetDevice::ProcessTimer() {
  armed_until_ns_ = 0;
  if (mem_ == nullptr) return;
  uint64_t now = MonotonicNs();
  // Each direction whose wait is over goes on; one not parked looks too
  // (after a PATCH or a restore the timer fires to look at both).
  if (tx_until_ <= now) {
    if (tx_until_ != 0) net_counters_.tx_rate_limiter_event_count++;
    tx_until_ = 0;
    Transmit();
  }
  if (rx_until_ <= now) {
    if (rx_until_ != 0) net_counters_.rx_event_rate_limiter_count++;
    rx_until_ = 0;
    Receive();
  }
  // A direction still waiting keeps its wakeup.
  if (rx_until_ > now) ArmFor(rx_until_, now);
  if (tx_until_ > now) ArmFor(tx_until_, now);
  ArmForMmds();
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
  if (tx_until_ != 0) {  // parked: the limiter's timer resumes it
    net_counters_.tx_rate_limiter_throttled++;
    return;
  }
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
    } else if (tap_failed_ && !mmds_) {
      net_counters_.tx_dropped++;
    } else if (tx_limiter_.enabled() && !Admit(tx_limiter_, total, &tx_until_)) {
      tx_->Undo();  // it waits in the ring for the limiter's timer
      net_counters_.tx_rate_limiter_throttled++;
      break;
    } else if (mmds_ && DetourToMmds(iov, total)) {
      // MMDS took it (charged to the limiter, as Firecracker): not the TAP's.
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
  if (mmds_ && mmds_->HasFrames()) Receive();  // MMDS's answers
  ArmForMmds();
}

bool NetDevice::DetourToMmds(const std::vector<iovec>& iov, size_t total) {
  tx_frame_.resize(total);
  size_t at = 0;
  for (const iovec& v : iov) {
    std::memcpy(tx_frame_.data() + at, v.iov_base, v.iov_len);
    at += v.iov_len;
  }
  bool partial = tx_frame_[0] & kHeaderNeedsCsum;
  return mmds_->Detour(std::span(tx_frame_).subspan(kHeaderSize), partial);
}

bool NetDevice::TakeMmdsFrame() {
  if (!mmds_ || !mmds_->HasFrames()) return false;
  size_t n = mmds_->WriteNextFrame(std::span(frame_).subspan(kHeaderSize));
  if (n == 0) return false;
  std::memset(frame_.data(), 0, kHeaderSize);
  pending_len_ = kHeaderSize + n;
  pending_paid_ = false;
  return true;
}

void NetDevice::ArmForMmds() {
  // A frame waiting for receive buffers goes when the guest adds some, and
  // a parked receive direction has the limiter's wakeup: no timer for those.
  if (!mmds_ || mem_ == nullptr || pending_len_ != 0 || rx_until_ != 0) return;
  std::optional<uint64_t> due_ms = mmds_->NextDeadline();
  if (!due_ms) return;
  // A deadline already past (nothing was ready for it) is looked at again
  // in a millisecond, not at once: no spinning.
  uint64_t now = MonotonicNs();
  uint64_t due = std::max(*due_ms * 1000000, now + 1000000);
  ArmFor(due, now);
}

void NetDevice::Receive() {
  if (rx_ == nullptr) return;
  if (rx_until_ != 0) {  // parked: frames wait in the TAP for the timer
    net_counters_.rx_rate_limiter_throttled++;
    return;
  }
  bool delivered = false;
  for (;;) {
    // MMDS's frames first, then the TAP's.
    if (pending_len_ == 0 && !TakeMmdsFrame()) {
      if (tap_failed_) break;
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
      pending_paid_ = false;
    }
    // Charged once, when read (header included, as Firecracker does); a
    // frame held back stays here and no more are read until the timer.
    if (!pending_paid_ && rx_limiter_.enabled()) {
      if (!Admit(rx_limiter_, pending_len_, &rx_until_)) {
        net_counters_.rx_rate_limiter_throttled++;
        break;
      }
    }
    pending_paid_ = true;
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
