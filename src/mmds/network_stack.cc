#include "src/mmds/network_stack.h"

#include <sys/random.h>

#include <cstring>

#include "src/mmds/service.h"

namespace ember::mmds {

struct NetworkStack::Slot {
  uint32_t ip;
  uint16_t port;
  TcpConnection conn;
};

NetworkStack::NetworkStack(const NetworkStackConfig& config, DataStore* store,
                           MmdsMetrics* metrics, Clock clock)
    : config_(config), store_(store), metrics_(metrics), clock_(std::move(clock)),
      slots_(kMaxConnections) {
  handler_ = [this](std::string_view head, uint32_t* skip) {
    return HandleRequest(*store_, head, *metrics_, skip);
  };
  rsts_.reserve(kMaxPendingResets);
  if (config.isn_seed) {
    isn_state_ = *config.isn_seed;
  } else if (getrandom(&isn_state_, sizeof(isn_state_), GRND_NONBLOCK) != sizeof(isn_state_)) {
    isn_state_ = clock_();  // guessable, but TCP's own checks still hold
  }
}

NetworkStack::~NetworkStack() = default;

// splitmix64: a guest cannot predict the next connection's sequence numbers
// from the last one without the seed.
uint32_t NetworkStack::NextIsn() {
  uint64_t z = (isn_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return static_cast<uint32_t>(z ^ (z >> 31));
}

bool NetworkStack::Detour(std::span<const uint8_t> frame, bool tcp_checksum_partial) {
  if (frame.size() < kEthHeaderLen) {
    metrics_->rx_bad_eth++;
    return false;
  }
  if (Load16(&frame[12]) == kEtherTypeArp) {
    std::optional<ArpRequest> req = ParseArpRequest(frame);
    if (!req || req->target_ip != config_.ipv4) return false;
    metrics_->rx_accepted++;
    guest_mac_ = req->sender_mac;
    arp_reply_to_ = req->sender_ip;
    return true;
  }
  std::optional<uint32_t> dst = PeekIpv4Destination(frame);
  if (!dst || *dst != config_.ipv4) return false;
  // The MMDS address is ours: whatever goes to it stops here.
  metrics_->rx_accepted++;
  TcpSegment s;
  switch (ParseIpv4Tcp(frame, tcp_checksum_partial, &s)) {
    case Ipv4Result::kTcp:
      guest_mac_ = s.src_mac;
      DetourTcp(s);
      break;
    case Ipv4Result::kNotTcp:
      metrics_->rx_accepted_unusual++;
      break;
    case Ipv4Result::kMalformed:
    case Ipv4Result::kRefused:
      metrics_->rx_accepted_err++;
      break;
  }
  return true;
}

void NetworkStack::Drop(size_t index) {
  slots_[index].reset();
  metrics_->connections_destroyed++;
}

void NetworkStack::QueueRst(uint32_t ip, uint16_t port, uint16_t local_port,
                            const OutSegment& rst) {
  // Past the bound, RSTs are forgone; the guest's own timers cover them.
  if (rsts_.size() < kMaxPendingResets) rsts_.push_back({ip, port, local_port, rst});
}

void NetworkStack::DetourTcp(const TcpSegment& s) {
  uint64_t now = clock_();
  if (s.dst_port != kHttpPort) {
    metrics_->rx_accepted_err++;
    if (!(s.flags & kRst)) QueueRst(s.src_ip, s.src_port, s.dst_port, RstFor(s));
    return;
  }
  metrics_->rx_count++;
  for (size_t i = 0; i < slots_.size(); i++) {
    Slot* slot = slots_[i].get();
    if (!slot || slot->ip != s.src_ip || slot->port != s.src_port) continue;
    if (slot->conn.Receive(s, now, handler_)) metrics_->rx_accepted_unusual++;
    if (slot->conn.done()) Drop(i);
    return;
  }
  // ECE, CWR, PSH and URG do not matter on a SYN; data on it is ignored
  // (never acknowledged, so the guest sends it again).
  if ((s.flags & (kSyn | kAck | kRst | kFin)) != kSyn) {
    metrics_->rx_accepted_unusual++;
    if (!(s.flags & kRst)) QueueRst(s.src_ip, s.src_port, kHttpPort, RstFor(s));
    return;
  }
  std::optional<uint16_t> mss = ParseMssOption(s.options);
  if (mss == 0) {
    metrics_->rx_accepted_err++;  // as Firecracker: no connection, no answer
    return;
  }
  size_t free = slots_.size();
  for (size_t i = 0; i < slots_.size() && free == slots_.size(); i++) {
    if (!slots_[i]) free = i;
  }
  for (size_t i = 0; i < slots_.size() && free == slots_.size(); i++) {
    if (slots_[i]->conn.evictable(now)) {
      QueueRst(slots_[i]->ip, slots_[i]->port, kHttpPort, slots_[i]->conn.Rst());
      Drop(i);
      free = i;
    }
  }
  if (free == slots_.size()) {
    QueueRst(s.src_ip, s.src_port, kHttpPort, RstFor(s));  // full: refused
    return;
  }
  slots_[free].reset(new Slot{s.src_ip, s.src_port,
                              TcpConnection(s, mss.value_or(kDefaultMss), NextIsn(), now)});
  metrics_->connections_created++;
}

bool NetworkStack::HasFrames() const {
  if (arp_reply_to_ || !rsts_.empty()) return true;
  uint64_t now = clock_();
  for (const auto& slot : slots_) {
    if (slot && slot->conn.HasSegment(now)) return true;
  }
  return false;
}

std::optional<uint64_t> NetworkStack::NextDeadline() const {
  std::optional<uint64_t> next;
  for (const auto& slot : slots_) {
    if (!slot) continue;
    std::optional<uint64_t> d = slot->conn.Deadline();
    if (d && (!next || *d < *next)) next = d;
  }
  return next;
}

size_t NetworkStack::connection_count() const {
  size_t n = 0;
  for (const auto& slot : slots_) n += slot != nullptr;
  return n;
}

void NetworkStack::CountTx(size_t bytes) {
  metrics_->tx_count++;
  metrics_->tx_frames++;
  metrics_->tx_bytes += bytes;
}

size_t NetworkStack::WriteSegment(std::span<uint8_t> buf, uint32_t ip, uint16_t port,
                                  uint16_t local_port, const OutSegment& o) {
  TcpHeader h{config_.ipv4, ip, local_port, port, o.seq, o.ack, o.flags, o.window, o.mss_option};
  return WriteTcpFrame(buf, config_.mac, guest_mac_, h, o.payload);
}

size_t NetworkStack::WriteNextFrame(std::span<uint8_t> buf) {
  // ARP replies first, then RSTs, then the connections in turn.
  if (arp_reply_to_) {
    size_t n = WriteArpReply(buf, config_.mac, config_.ipv4, guest_mac_, *arp_reply_to_);
    if (n == 0) {
      metrics_->tx_errors++;
      return 0;
    }
    arp_reply_to_.reset();
    CountTx(n);
    return n;
  }
  if (!rsts_.empty()) {
    const PendingRst& r = rsts_.back();
    size_t n = WriteSegment(buf, r.ip, r.port, r.local_port, r.rst);
    if (n == 0) {
      metrics_->tx_errors++;
      return 0;
    }
    rsts_.pop_back();
    CountTx(n);
    return n;
  }
  uint64_t now = clock_();
  // Room for a SYN-ACK's MSS option at least.
  if (buf.size() < kTcpFrameOverhead + 4) {
    if (HasFrames()) metrics_->tx_errors++;
    return 0;
  }
  for (size_t k = 0; k < slots_.size(); k++) {
    size_t i = (next_slot_ + k) % slots_.size();
    Slot* slot = slots_[i].get();
    if (!slot || !slot->conn.HasSegment(now)) continue;
    std::optional<OutSegment> o = slot->conn.Next(buf.size() - kTcpFrameOverhead, now);
    size_t n = o ? WriteSegment(buf, slot->ip, slot->port, kHttpPort, *o) : 0;
    if (slot->conn.done()) Drop(i);
    if (n > 0) {
      next_slot_ = i + 1;
      CountTx(n);
      return n;
    }
  }
  return 0;
}

}  // namespace ember::mmds
