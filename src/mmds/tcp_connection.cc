#include "src/mmds/tcp_connection.h"

#include <algorithm>
#include <cstring>

namespace ember::mmds {
namespace {

// a < b and a <= b in sequence space.
bool SeqLt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }
bool SeqLe(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) <= 0; }

// The sequence space a segment takes: its data, SYN and FIN.
uint32_t SeqLen(const TcpSegment& s) {
  return static_cast<uint32_t>(s.payload.size()) + ((s.flags & kSyn) ? 1 : 0) +
         ((s.flags & kFin) ? 1 : 0);
}

}  // namespace

TcpConnection::TcpConnection(const TcpSegment& syn, uint16_t peer_mss, uint32_t isn, uint64_t now)
    : iss_(isn), snd_una_(isn), snd_nxt_(isn + 1), snd_max_(isn + 1),
      snd_wnd_edge_(isn + 1 + syn.window), rcv_nxt_(syn.seq + 1), mss_(peer_mss),
      timer_start_(now), last_rx_(now) {}

OutSegment TcpConnection::Segment(uint32_t seq, uint8_t flags) const {
  OutSegment o;
  o.seq = seq;
  o.ack = rcv_nxt_;
  o.flags = flags;
  o.window = RecvWindow();
  return o;
}

OutSegment TcpConnection::Rst() const {
  // With the ACK flag so that a guest still in SYN-SENT takes it too.
  OutSegment o = Segment(snd_max_, kRst | kAck);
  o.window = 0;
  return o;
}

OutSegment RstFor(const TcpSegment& s) {
  OutSegment o;
  if (s.flags & kAck) {
    o.seq = s.ack;
    o.flags = kRst;
  } else {
    o.ack = s.seq + SeqLen(s);
    o.flags = kRst | kAck;
  }
  return o;
}

void TcpConnection::ResetSelf() {
  if (!rst_) rst_ = Rst();
}

bool TcpConnection::Receive(const TcpSegment& s, uint64_t now, const RequestHandler& handler) {
  if (reset_ || rst_) return true;
  last_rx_ = now;
  bool unusual = false;
  if (s.flags & kRst) {
    // Only a RST in the window ends the connection (RFC 5961's blind-reset rule, loosely).
    uint32_t window = std::max<uint32_t>(RecvWindow(), 1);
    if (SeqLe(rcv_nxt_, s.seq) && SeqLt(s.seq, rcv_nxt_ + window)) {
      reset_ = true;
      return false;
    }
    return true;
  }
  if (!established_) {
    if ((s.flags & (kSyn | kAck | kFin)) == kSyn && s.payload.empty() && s.seq + 1 == rcv_nxt_) {
      synack_due_ = true;  // the SYN again: our SYN-ACK was lost
      return false;
    }
    if (s.flags & kSyn) {
      rst_ = RstFor(s);
      return true;
    }
    if (!(s.flags & kAck)) return true;
    if (!synack_sent_ || s.ack != iss_ + 1) {
      rst_ = RstFor(s);
      return true;
    }
    established_ = true;
    snd_una_ = s.ack;
    snd_wnd_edge_ = s.ack + s.window;
    retransmissions_ = 0;
    timer_start_ = now;
  } else {
    if (s.flags & kSyn) {
      rst_ = RstFor(s);
      return true;
    }
    if (!(s.flags & kAck)) return true;  // RFC 793: without ACK, dropped
    if (!ProcessAck(s, now, &unusual)) return true;
  }
  ProcessData(s, &unusual);
  Serve(handler);
  return unusual;
}

// False when the segment is to be dropped whole.
bool TcpConnection::ProcessAck(const TcpSegment& s, uint64_t now, bool* unusual) {
  if (SeqLt(snd_max_, s.ack)) {
    // Acknowledges what was never sent: answer with an ACK, drop the rest.
    pending_ack_ = true;
    return false;
  }
  if (SeqLt(s.ack, snd_una_)) return true;  // an old ACK: its data may still be new
  uint32_t edge = s.ack + s.window;
  if (s.ack == snd_una_) {
    bool duplicate = snd_una_ != snd_max_ && s.payload.empty() && !(s.flags & kFin) &&
                     edge == snd_wnd_edge_;
    if (duplicate) {
      *unusual = true;
      // Send again from the first unacked byte, once per loss.
      if (!in_recovery_) {
        in_recovery_ = true;
        recover_ = snd_max_;
        snd_nxt_ = snd_una_;
      }
    }
    if (edge != snd_wnd_edge_) {
      if (SeqLt(edge, snd_wnd_edge_)) *unusual = true;  // the guest shrank its window
      // A closed window opens: the probes were answered.
      if (SendRoom() == 0 && SeqLt(snd_nxt_, edge)) retransmissions_ = 0;
      snd_wnd_edge_ = edge;
      timer_start_ = now;
    }
    return true;
  }
  snd_una_ = s.ack;
  if (SeqLt(snd_nxt_, snd_una_)) snd_nxt_ = snd_una_;
  if (in_recovery_ && SeqLe(recover_, snd_una_)) in_recovery_ = false;
  // The ACK can reach past fin_seq_ only once the FIN went out.
  if (closing_ && s.ack == fin_seq_ + 1) fin_acked_ = true;
  if (SeqLt(edge, snd_wnd_edge_)) *unusual = true;
  snd_wnd_edge_ = edge;
  retransmissions_ = 0;
  timer_start_ = now;
  if (!response_.empty() && SeqLe(resp_seq_ + static_cast<uint32_t>(response_.size()), snd_una_)) {
    response_.clear();  // all acknowledged: the next request may be served
  }
  return true;
}

void TcpConnection::ProcessData(const TcpSegment& s, bool* unusual) {
  std::span<const uint8_t> data = s.payload;
  uint32_t seq = s.seq;
  bool fin = s.flags & kFin;
  if (data.empty() && !fin) return;  // a bare ACK: nothing to take or answer
  if (fin_received_) {
    // Nothing more may come; a FIN sent again is acknowledged again.
    if (!data.empty() || fin) {
      pending_ack_ = true;
      *unusual = *unusual || !data.empty();
    }
    return;
  }
  if (!data.empty() && SeqLt(seq, rcv_nxt_)) {
    // Some of it came before: keep what is new, if anything.
    uint32_t old = rcv_nxt_ - seq;
    if (old >= data.size()) {
      pending_ack_ = true;
      *unusual = true;
      if (old > data.size() || !fin) return;
      data = {};
    } else {
      data = data.subspan(old);
    }
    seq = rcv_nxt_;
  }
  if (seq != rcv_nxt_) {
    // Out of order: dropped, and the byte we wait for asked again.
    pending_ack_ = true;
    *unusual = true;
    return;
  }
  if (!data.empty()) {
    if (data.size() > RecvWindow()) {
      data = data.first(RecvWindow());  // beyond our window: the guest sends it again
      fin = false;
      *unusual = true;
    }
    Take(data);
    rcv_nxt_ += static_cast<uint32_t>(data.size());
    pending_ack_ = true;
  }
  if (fin) {
    fin_received_ = true;
    rcv_nxt_ += 1;
    pending_ack_ = true;
  }
}

void TcpConnection::Take(std::span<const uint8_t> data) {
  size_t dropped = std::min<size_t>(skip_, data.size());
  skip_ -= static_cast<uint32_t>(dropped);
  data = data.subspan(dropped);
  std::memcpy(buf_.data() + used_, data.data(), data.size());
  used_ += data.size();
}

void TcpConnection::Serve(const RequestHandler& handler) {
  if (rst_ || closing_) return;
  if (response_.empty() && used_ > 0) {
    size_t end = FindRequestEnd(std::span<const uint8_t>(buf_.data(), used_));
    if (end == 0) {
      // A full buffer with no end in sight: over Firecracker's request bound.
      if (used_ == buf_.size()) ResetSelf();
      return;
    }
    uint32_t skip = 0;
    response_ = handler(std::string_view(reinterpret_cast<const char*>(buf_.data()), end), &skip);
    resp_seq_ = snd_max_;
    size_t dropped = std::min<size_t>(skip, used_ - end);
    std::memmove(buf_.data(), buf_.data() + end + dropped, used_ - end - dropped);
    used_ -= end + dropped;
    skip_ = skip - static_cast<uint32_t>(dropped);
  }
  if (fin_received_ && response_.empty()) {
    closing_ = true;
    fin_seq_ = snd_max_;
  }
}

size_t TcpConnection::Unsent() const {
  if (response_.empty() || SeqLt(snd_nxt_, resp_seq_)) return 0;
  size_t off = snd_nxt_ - resp_seq_;
  return off < response_.size() ? response_.size() - off : 0;
}

uint32_t TcpConnection::SendRoom() const {
  return SeqLt(snd_nxt_, snd_wnd_edge_) ? snd_wnd_edge_ - snd_nxt_ : 0;
}

bool TcpConnection::FinDue(size_t n) const {
  return closing_ && !fin_acked_ && snd_nxt_ + static_cast<uint32_t>(n) == fin_seq_;
}

// Retransmission (something unacked) or persist (data held back by a zero window).
bool TcpConnection::TimerArmed() const {
  if (!established_) return synack_sent_;
  return snd_una_ != snd_max_ || (Unsent() > 0 && SendRoom() == 0);
}

uint64_t TcpConnection::Rto() const {
  return std::min(kRtoMs << std::min(retransmissions_, 8), kMaxRtoMs);
}

std::optional<uint64_t> TcpConnection::Deadline() const {
  if (reset_ || rst_ || !TimerArmed()) return std::nullopt;
  return timer_start_ + Rto();
}

bool TcpConnection::HasSegment(uint64_t now) const {
  if (reset_) return false;
  if (rst_ || (!established_ && synack_due_)) return true;
  if (TimerArmed() && now - timer_start_ >= Rto()) return true;
  if (!established_) return false;
  size_t n = std::min<size_t>({Unsent(), SendRoom(), mss_});
  return n > 0 || FinDue(0) || pending_ack_;
}

std::optional<OutSegment> TcpConnection::Next(size_t max_payload, uint64_t now) {
  if (reset_) return std::nullopt;
  if (rst_) {
    reset_ = true;
    return rst_;
  }
  bool timeout = TimerArmed() && now - timer_start_ >= Rto();
  if (timeout && ++retransmissions_ > kMaxRetransmissions) {
    ResetSelf();
    reset_ = true;
    return rst_;
  }
  if (!established_) {
    if (!synack_due_ && !timeout) return std::nullopt;
    synack_due_ = false;
    synack_sent_ = true;
    timer_start_ = now;
    OutSegment o = Segment(iss_, kSyn | kAck);
    o.mss_option = kOurMss;
    pending_ack_ = false;
    return o;
  }
  if (timeout) {
    timer_start_ = now;
    snd_nxt_ = snd_una_;  // go back and send everything unacked again
  }
  size_t n = std::min<size_t>({Unsent(), SendRoom(), mss_, max_payload});
  bool fin = FinDue(n);
  if (timeout && n == 0 && !fin) {
    // Nothing fits the guest's window: a probe with an old sequence
    // number makes it answer with its current window.
    pending_ack_ = false;
    return Segment(snd_una_ - 1, kAck);
  }
  if (n == 0 && !fin && !pending_ack_) return std::nullopt;
  OutSegment o = Segment(snd_nxt_, kAck);
  if (n > 0) {
    o.payload = std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(response_.data()) + (snd_nxt_ - resp_seq_), n);
    if (n == Unsent()) o.flags |= kPsh;
  }
  if (fin) o.flags |= kFin;
  if (n > 0 || fin) {
    if (snd_una_ == snd_max_) timer_start_ = now;  // the first unacked byte starts the timer
    snd_nxt_ += static_cast<uint32_t>(n) + (fin ? 1 : 0);
    if (SeqLt(snd_max_, snd_nxt_)) snd_max_ = snd_nxt_;
  }
  pending_ack_ = false;
  return o;
}

}  // namespace ember::mmds
