// One vsock stream between a guest port and a host Unix socket, as the
// muxer (muxer.h) keeps it: its state, the packets it owes the guest, and
// the credit both ways (virtio 1.2, 5.10.6.3). Plain data; the muxer
// drives it.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "src/common/unique_fd.h"

namespace ember::virtio::vsock {

// Guest bytes the host socket has not taken yet, at most `capacity`
// (the buf_alloc we advertise): a ring, allocated on first use.
class TxBuf {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Copies all of `data` in; the caller has checked it fits.
  void Push(std::span<const iovec> data, size_t capacity);
  // Sends from the front to a socket (never raising SIGPIPE): bytes sent,
  // or -1 with errno.
  ssize_t FlushTo(int fd);
  void Clear() { head_ = size_ = 0; }

 private:
  std::vector<uint8_t> ring_;
  size_t head_ = 0;
  size_t size_ = 0;
};

enum class ConnState {
  kAwaitingConnect,  // a host socket that has not sent its CONNECT line yet
  kConnecting,       // host-initiated: REQUEST owed or sent, RESPONSE awaited
  kEstablished,
  kClosing,          // the host socket is gone; the guest's RST is awaited
};

struct Connection {
  uint64_t token = 0;  // the inner epoll's id for it, never reused
  ConnState state = ConnState::kAwaitingConnect;
  UniqueFd fd;         // -1 once the host side is closed
  uint32_t local_port = 0, peer_port = 0;
  std::string line;  // the CONNECT line so far

  // Packets owed to the guest.
  bool want_request = false, want_response = false;
  bool want_credit_update = false, want_credit_request = false;
  uint32_t want_shutdown = 0;  // SHUTDOWN flags to send
  bool request_sent = false;
  // The host socket has bytes (or its EOF) for the guest; it is not
  // polled for input until they are delivered.
  bool readable = false;
  bool host_eof = false;  // its EOF reached the guest as SHUTDOWN(SEND)
  bool hup = false;       // the host closed its end (EPOLLHUP seen)
  uint32_t peer_shutdown = 0;  // SHUTDOWN flags the guest sent

  // Credit (5.10.6.3): the guest's buffer and how much of it it freed;
  // what we sent it (rx_cnt) and forwarded from it (fwd_cnt); the fwd_cnt
  // the guest last heard. All wrap around at 2^32, as in the spec.
  uint32_t peer_buf_alloc = 0, peer_fwd_cnt = 0;
  uint32_t rx_cnt = 0, fwd_cnt = 0, last_fwd_cnt_sent = 0;
  TxBuf tx;

  int64_t deadline_ms = 0;  // monotonic; 0: none
  bool queued = false;      // on the muxer's list of connections with packets
  bool registered = false;  // in the inner epoll
  uint32_t events = 0;      // with these events

  // Bytes the guest can take now. A guest that reports more freed than
  // it was sent gets none: it may lie to itself only.
  uint32_t PeerCredit() const {
    uint32_t in_flight = rx_cnt - peer_fwd_cnt;
    return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
  }
  bool HasRx() const {
    return want_request || want_response || want_credit_update || want_credit_request ||
           want_shutdown != 0 || readable;
  }
  static uint64_t Key(uint32_t local_port, uint32_t peer_port) {
    return uint64_t{local_port} << 32 | peer_port;
  }
  uint64_t key() const { return Key(local_port, peer_port); }
};

}  // namespace ember::virtio::vsock
