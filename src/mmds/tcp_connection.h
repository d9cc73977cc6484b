// One TCP connection from the guest to MMDS (Firecracker's dumbo Connection
// and Endpoint together): passive open only, the guest's HTTP requests in
// a fixed receive buffer, one response at a time.
//
// Kept simple because the peer is a guest on a virtual link, but never
// trusting it: data is accepted only in order (what comes early is
// dropped and the next expected byte acked again, what comes twice is
// trimmed), the receive window is the free room of the 2500-byte buffer
// (a request head that fills it resets the connection), the guest's
// window bounds what is sent (a zero window is probed, never overrun), a
// duplicate ACK or a timeout sends again from the first unacked byte, and
// a connection whose retransmissions or probes go unanswered
// kMaxRetransmissions times resets itself. Sequence numbers compare
// modulo 2^32.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "src/mmds/http.h"
#include "src/mmds/packets.h"

namespace ember::mmds {

// Firecracker's timing (dumbo/tcp/endpoint.rs, in cycles there; its
// comment gives them as ~300 ms and ~10 s): the first retransmission
// after kRtoMs, at most kMaxRetransmissions in a row (Firecracker's 15);
// a connection silent for kEvictAfterMs may be evicted for a new one.
// Unlike Firecracker the wait doubles, up to kMaxRtoMs, so that a guest
// paused for a few seconds does not lose its connection.
inline constexpr uint64_t kRtoMs = 300;
inline constexpr uint64_t kMaxRtoMs = 5000;
inline constexpr int kMaxRetransmissions = 15;
inline constexpr uint64_t kEvictAfterMs = 10000;
// Firecracker's default when a SYN has no MSS option.
inline constexpr uint16_t kDefaultMss = 536;
// What MMDS tells the guest it takes in one segment.
inline constexpr uint16_t kOurMss = 1460;

// A segment to send, without addresses and ports.
struct OutSegment {
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  uint16_t mss_option = 0;
  std::span<const uint8_t> payload;  // valid until the connection changes
};

// A request head to the response bytes; `skip` is set to the body bytes
// that follow the head and are to be dropped.
using RequestHandler = std::function<std::string(std::string_view head, uint32_t* skip)>;

// RFC 793's reply to a segment that belongs to no connection: a RST the
// guest will take as matching it.
OutSegment RstFor(const TcpSegment& s);

class TcpConnection {
 public:
  // For a SYN with no other flag and no payload; `peer_mss` from its option.
  TcpConnection(const TcpSegment& syn, uint16_t peer_mss, uint32_t isn, uint64_t now);

  // Takes a segment of this connection; true when it was unusual (out of
  // order, duplicate, invalid ACK, ignored RST, ...).
  bool Receive(const TcpSegment& s, uint64_t now, const RequestHandler& handler);
  // The next segment due at `now`, with at most `max_payload` bytes of data.
  std::optional<OutSegment> Next(size_t max_payload, uint64_t now);
  // Whether Next would give a segment at `now` (with room for some data).
  bool HasSegment(uint64_t now) const;
  // When a timer will next make a segment due, if one is armed.
  std::optional<uint64_t> Deadline() const;

  // Reset, or both FINs exchanged and ours acknowledged: to be dropped.
  bool done() const { return reset_ || (fin_received_ && fin_acked_); }
  bool evictable(uint64_t now) const { return now - last_rx_ >= kEvictAfterMs; }
  // The RST that tells the guest this connection is gone (on eviction).
  OutSegment Rst() const;

 private:
  void ResetSelf();
  bool ProcessAck(const TcpSegment& s, uint64_t now, bool* unusual);
  void ProcessData(const TcpSegment& s, bool* unusual);
  void Serve(const RequestHandler& handler);
  void Take(std::span<const uint8_t> data);
  uint16_t RecvWindow() const { return static_cast<uint16_t>(buf_.size() - used_); }
  size_t Unsent() const;
  uint32_t SendRoom() const;
  bool FinDue(size_t n) const;
  bool TimerArmed() const;
  uint64_t Rto() const;
  OutSegment Segment(uint32_t seq, uint8_t flags) const;

  // Send side: the first unacked, next to send and highest sent sequence
  // numbers, and the right edge of the guest's window.
  uint32_t iss_, snd_una_, snd_nxt_, snd_max_, snd_wnd_edge_;
  uint32_t rcv_nxt_;
  uint16_t mss_;
  bool established_ = false;
  bool synack_due_ = true, synack_sent_ = false;
  bool pending_ack_ = false;
  bool in_recovery_ = false;  // a fast retransmission runs until recover_ is acked
  uint32_t recover_ = 0;
  bool fin_received_ = false;
  bool closing_ = false, fin_acked_ = false;
  uint32_t fin_seq_ = 0;
  std::optional<OutSegment> rst_;  // to send, then the connection is reset
  bool reset_ = false;
  uint64_t timer_start_;
  int retransmissions_ = 0;
  uint64_t last_rx_;

  std::array<uint8_t, kMaxRequestBytes> buf_;
  size_t used_ = 0;
  uint32_t skip_ = 0;       // body bytes still to drop
  std::string response_;    // the response being sent, until fully acked
  uint32_t resp_seq_ = 0;   // the sequence number of response_[0]
};

}  // namespace ember::mmds
