// The muxer's guest side: packets from the guest's transmit queue, and
// the packets it is owed, built as receive buffers come.
#include "src/devices/virtio/vsock/muxer.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/common/log.h"

namespace ember::virtio::vsock {
namespace {

// The first `max` bytes of `from`.
std::vector<iovec> Prefix(const std::vector<iovec>& from, size_t max) {
  std::vector<iovec> out;
  for (const iovec& v : from) {
    if (max == 0) break;
    size_t n = std::min(v.iov_len, max);
    out.push_back({v.iov_base, n});
    max -= n;
  }
  return out;
}

// `from` less its first `skip` bytes.
std::vector<iovec> Suffix(const std::vector<iovec>& from, size_t skip) {
  std::vector<iovec> out;
  for (const iovec& v : from) {
    size_t n = std::min(v.iov_len, skip);
    skip -= n;
    if (n < v.iov_len) out.push_back({static_cast<uint8_t*>(v.iov_base) + n, v.iov_len - n});
  }
  return out;
}

}  // namespace

// --- Guest side ------------------------------------------------------------

void Muxer::FromGuest(const TxPacket& p) {
  const PacketHeader& h = p.header;
  counters_->tx_packets_count++;
  if (h.src_cid != config_.guest_cid) {
    // Not from our guest's address: nobody to answer.
    counters_->bad_packets++;
    LOG_WARN_RATELIMITED("vsock: a guest packet from CID %d (the guest is %d); dropped",
                         h.src_cid, config_.guest_cid);
    return;
  }
  if (h.dst_cid != kHostCid || h.type != kTypeStream) {
    counters_->bad_packets++;
    LOG_DEBUG_RATELIMITED("vsock: a guest packet to CID %d of type %d; only the host (2) and "
                          "streams (1) are served; reset", h.dst_cid, h.type);
    ResetReply(h);
    return;
  }
  Connection* c = FindByKey(Connection::Key(h.dst_port, h.src_port));
  if (c == nullptr) {
    if (h.op == kOpRequest) {
      ConnectToHost(h);
    } else {
      ResetReply(h);  // a stream we do not know (or no longer)
    }
    return;
  }
  if (h.op == kOpRst) {
    Remove(*c, /*rst=*/false, /*killed=*/false);
    return;
  }
  c->peer_buf_alloc = h.buf_alloc;
  c->peer_fwd_cnt = h.fwd_cnt;
  switch (h.op) {
    case kOpResponse:
      if (c->state != ConnState::kConnecting) break;
      Established(*c);
      return;
    case kOpRw:
      if (c->state == ConnState::kClosing) {
        Kill(*c);  // the host is gone: as Linux answers a write to a closed peer
        return;
      }
      if (c->state != ConnState::kEstablished || (c->peer_shutdown & kShutdownSend)) break;
      ToHost(*c, p);
      return;
    case kOpShutdown:
      if (c->state != ConnState::kEstablished && c->state != ConnState::kClosing) break;
      OnShutdown(*c, h.flags);
      return;
    case kOpCreditUpdate:
      UpdateInterest(*c);  // the guest may have room again
      return;
    case kOpCreditRequest:
      c->want_credit_update = true;
      Queue(*c);
      UpdateInterest(*c);
      return;
    default:
      break;
  }
  counters_->bad_packets++;
  LOG_WARN_RATELIMITED("vsock: guest op %d on the stream of host port %d in the wrong state or "
                       "unknown; reset", h.op, c->local_port);
  Kill(*c);
}

void Muxer::RejectFromGuest(const PacketHeader& h) {
  if (h.src_cid != config_.guest_cid) return;
  Connection* c = FindByKey(Connection::Key(h.dst_port, h.src_port));
  if (c == nullptr) {
    ResetReply(h);
  } else {
    Remove(*c, /*rst=*/h.op != kOpRst, /*killed=*/h.op != kOpRst);
  }
}

void Muxer::ConnectToHost(const PacketHeader& h) {
  if (conns_.size() >= limits_.max_connections) {
    counters_->conns_refused++;
    LOG_WARN_RATELIMITED("vsock: %d connections already; refusing the guest's to port %d",
                         conns_.size(), h.dst_port);
    ResetReply(h);
    return;
  }
  std::string path = absl::StrCat(config_.uds_path, "_", h.dst_port);
  int fd = ConnectUnix(path);
  if (fd < 0) {
    LOG_DEBUG_RATELIMITED("vsock: the guest's connection to port %d: %s: %s; reset", h.dst_port,
                          path, std::strerror(errno));
    ResetReply(h);
    return;
  }
  Connection& c = Add(UniqueFd(fd), ConnState::kEstablished);
  SetPorts(c, h.dst_port, h.src_port);
  c.peer_buf_alloc = h.buf_alloc;
  c.peer_fwd_cnt = h.fwd_cnt;
  c.want_response = true;
  counters_->conns_added++;
  Queue(c);
  UpdateInterest(c);
}

void Muxer::Established(Connection& c) {
  c.state = ConnState::kEstablished;
  c.deadline_ms = 0;
  std::string ok = absl::StrCat("OK ", c.local_port, "\n");
  ssize_t n = send(c.fd.get(), ok.data(), ok.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n != static_cast<ssize_t>(ok.size())) {
    // A dozen bytes into a fresh socket: only a host program gone fails.
    LOG_DEBUG_RATELIMITED("vsock: could not tell the host program of port %d it is connected",
                          c.local_port);
    Kill(c);
    return;
  }
  UpdateInterest(c);
}

void Muxer::ToHost(Connection& c, const TxPacket& p) {
  size_t len = p.header.len;
  if (len == 0) {
    UpdateInterest(c);
    return;
  }
  if (c.tx.size() + len > limits_.buf_alloc) {
    counters_->credit_violations++;
    LOG_WARN_RATELIMITED("vsock: the guest sent %d bytes to host port %d with %d of its %d "
                         "bytes of credit used; reset", len, c.local_port, c.tx.size(),
                         limits_.buf_alloc);
    Kill(c);
    return;
  }
  size_t sent = 0;
  if (c.tx.empty()) {
    msghdr msg = {};
    msg.msg_iov = const_cast<iovec*>(p.payload.data());
    msg.msg_iovlen = p.payload.size();
    ssize_t n;
    do {
      n = sendmsg(c.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
      counters_->tx_write_fails++;
      LOG_DEBUG_RATELIMITED("vsock: writing to the host socket of port %d: %s", c.local_port,
                            std::strerror(errno));
      Kill(c);
      return;
    }
    sent = n > 0 ? n : 0;
  }
  if (sent < len) c.tx.Push(Suffix(p.payload, sent), limits_.buf_alloc);
  c.fwd_cnt += static_cast<uint32_t>(sent);
  counters_->tx_bytes_count += sent;
  AfterForward(c);
}

void Muxer::OnShutdown(Connection& c, uint32_t flags) {
  c.peer_shutdown |= flags & kShutdownBoth;
  bool both = (c.peer_shutdown & kShutdownBoth) == kShutdownBoth;
  if (c.state == ConnState::kClosing) {
    if (both) Remove(c, /*rst=*/true, /*killed=*/false);
    return;
  }
  if (both) {
    // Linux waits for our RST; what the guest sent goes out first, in time.
    if (c.tx.empty()) {
      Remove(c, /*rst=*/true, /*killed=*/false);
      return;
    }
    SetDeadline(c, limits_.shutdown_timeout_ms);
  }
  if (c.peer_shutdown & kShutdownRcv) c.readable = false;
  if ((c.peer_shutdown & kShutdownSend) && c.tx.empty()) shutdown(c.fd.get(), SHUT_WR);
  UpdateInterest(c);
}

// --- Packets for the guest -------------------------------------------------

std::optional<PacketHeader> Muxer::NextRx(const RxBuffer& buffer) {
  // Each stream is looked at once: one that needs a bigger buffer goes to
  // the back and waits for the next.
  size_t tries = ready_.size() + 1;
  for (;;) {
    if (!resets_.empty()) {
      Reset r = resets_.front();
      resets_.pop_front();
      PacketHeader h;
      h.src_cid = r.src_cid;
      h.dst_cid = config_.guest_cid;
      h.src_port = r.src_port;
      h.dst_port = r.dst_port;
      h.op = kOpRst;
      counters_->rx_packets_count++;
      counters_->rst_sent++;
      return h;
    }
    if (ready_.empty() || tries-- == 0) return std::nullopt;
    uint64_t token = ready_.front();
    ready_.pop_front();
    Connection* c = Find(token);
    if (c == nullptr) continue;
    c->queued = false;
    PacketHeader h;
    bool produced = Produce(*c, buffer, &h);
    if ((c = Find(token)) != nullptr) Queue(*c);  // to the back, if it owes more
    if (produced) {
      counters_->rx_packets_count++;
      return h;
    }
  }
}

bool Muxer::Produce(Connection& c, const RxBuffer& buffer, PacketHeader* h) {
  if (c.want_request) {
    c.want_request = false;
    c.request_sent = true;
    *h = HeaderFor(c, kOpRequest);
    return true;
  }
  if (c.want_response) {
    c.want_response = false;
    *h = HeaderFor(c, kOpResponse);
    return true;
  }
  if (c.readable) {
    uint64_t token = c.token;
    if (ReadData(c, buffer, h)) return true;
    if (Find(token) == nullptr) return false;
  }
  if (c.want_shutdown != 0) {
    *h = HeaderFor(c, kOpShutdown);
    h->flags = c.want_shutdown;
    c.want_shutdown = 0;
    return true;
  }
  if (c.want_credit_update) {
    *h = HeaderFor(c, kOpCreditUpdate);
    return true;
  }
  if (c.want_credit_request) {
    c.want_credit_request = false;
    *h = HeaderFor(c, kOpCreditRequest);
    return true;
  }
  return false;
}

bool Muxer::ReadData(Connection& c, const RxBuffer& buffer, PacketHeader* h) {
  uint32_t credit = c.PeerCredit();
  if (credit == 0) {
    c.readable = false;  // polled again when the guest makes room
    UpdateInterest(c);
    return false;
  }
  if (buffer.payload_size == 0) return false;  // a bigger buffer will do
  size_t max = std::min<size_t>({credit, kMaxPayload, buffer.payload_size});
  std::vector<iovec> iov = Prefix(buffer.payload, max);
  ssize_t n;
  do {
    n = readv(c.fd.get(), iov.data(), static_cast<int>(iov.size()));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    *h = HeaderFor(c, kOpRw);
    h->len = static_cast<uint32_t>(n);
    c.rx_cnt += static_cast<uint32_t>(n);
    counters_->rx_bytes_count += n;
    // Ask for news of its buffer once the guest's credit is spent.
    if (c.PeerCredit() == 0) c.want_credit_request = true;
    return true;  // still readable: the next read says when it is drained
  }
  if (n == 0) {
    c.readable = false;
    if (c.hup) {
      HostGone(c);  // SHUTDOWN(RCV|SEND) next, then the guest's RST
      return false;
    }
    // Half closed: the host program may still read.
    c.host_eof = true;
    c.want_shutdown |= kShutdownSend;
    UpdateInterest(c);
    return false;
  }
  if (errno == EAGAIN) {
    c.readable = false;
    UpdateInterest(c);
    return false;
  }
  counters_->rx_read_fails++;
  LOG_DEBUG_RATELIMITED("vsock: reading the host socket of port %d: %s", c.local_port,
                        std::strerror(errno));
  Kill(c);
  return false;
}

PacketHeader Muxer::HeaderFor(Connection& c, uint16_t op) {
  PacketHeader h;
  h.src_cid = kHostCid;
  h.dst_cid = config_.guest_cid;
  h.src_port = c.local_port;
  h.dst_port = c.peer_port;
  h.op = op;
  h.buf_alloc = limits_.buf_alloc;
  h.fwd_cnt = c.fwd_cnt;
  // Every packet tells the guest our credit.
  c.last_fwd_cnt_sent = c.fwd_cnt;
  c.want_credit_update = false;
  return h;
}

}  // namespace ember::virtio::vsock
