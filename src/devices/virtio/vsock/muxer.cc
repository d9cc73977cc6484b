#include "src/devices/virtio/vsock/muxer.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::vsock {
namespace {

constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;
// Host connections taken per wakeup; the rest wait for the next one.
constexpr int kMaxAcceptsPerPoll = 16;
// How long the listener rests after accept4 failed for want of fds.
constexpr int64_t kAcceptRetryMs = 1000;

int64_t NowMs() { return static_cast<int64_t>(MonotonicMs()); }

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

absl::StatusOr<std::unique_ptr<Muxer>> Muxer::Create(const VsockConfig& config,
                                                     const VsockLimits& limits,
                                                     VsockCounters* counters) {
  // VMADDR_CID_ANY (-1) is no address either.
  if (config.guest_cid < kMinGuestCid || config.guest_cid == UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vsock guest_cid ", config.guest_cid, " is reserved; use ", kMinGuestCid, " or more"));
  }
  // Everything that can fail without leaving a file comes before the bind.
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return ErrnoStatus("vsock: epoll_create1");
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return ErrnoStatus("vsock: timerfd_create");
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = kTimerToken;
  if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, timer.get(), &ev) != 0) {
    return ErrnoStatus("vsock: epoll_ctl");
  }
  ASSIGN_OR_RETURN(UnixListener listener, ListenUnix(config.uds_path));
  return std::unique_ptr<Muxer>(new Muxer(config, limits, counters, std::move(listener),
                                          std::move(epoll), std::move(timer)));
}

Muxer::Muxer(VsockConfig config, VsockLimits limits, VsockCounters* counters,
             UnixListener listener, UniqueFd epoll, UniqueFd timer)
    : config_(std::move(config)),
      limits_(limits),
      counters_(counters),
      listener_(std::move(listener)),
      epoll_(std::move(epoll)),
      timer_(std::move(timer)) {}

Muxer::~Muxer() {
  conns_.clear();
  UnlinkIfOurs(config_.uds_path, listener_);
}

// --- Lifecycle -------------------------------------------------------------

void Muxer::Start() {
  listening_ = true;
  SetListenerRegistered(true);
}

void Muxer::Stop() {
  DropAll();
  listening_ = false;
  SetListenerRegistered(false);
  listener_paused_until_ms_ = 0;
  itimerspec off = {};
  timerfd_settime(timer_.get(), 0, &off, nullptr);
  armed_ms_ = 0;
  local_port_last_ = (1u << 30) - 1;
}

void Muxer::DropAll() {
  for (const auto& [token, c] : conns_) {
    if (c->state != ConnState::kAwaitingConnect) counters_->conns_removed++;
  }
  conns_.clear();  // closing each fd takes it out of the epoll
  by_key_.clear();
  local_ports_.clear();
  ready_.clear();
  resets_.clear();
}

void Muxer::SetListenerRegistered(bool on) {
  if (on == listener_registered_) return;
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerToken;
  if (epoll_ctl(epoll_.get(), on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listener_.fd.get(), &ev) != 0) {
    LOG_WARN("vsock: epoll_ctl on %s: %s", config_.uds_path, std::strerror(errno));
    return;
  }
  listener_registered_ = on;
}

void Muxer::Poll() {
  epoll_event events[kMaxEvents];
  int n = epoll_wait(epoll_.get(), events, kMaxEvents, 0);
  for (int i = 0; i < n; i++) {
    uint64_t token = events[i].data.u64;
    if (token == kListenerToken) {
      Accept(/*serve=*/true);
    } else if (token == kTimerToken) {
      OnTimer();
    } else if (Connection* c = Find(token)) {
      OnEvent(*c, events[i].events);
    }
  }
}

void Muxer::Drain() {
  epoll_event events[kMaxEvents];
  int n = epoll_wait(epoll_.get(), events, kMaxEvents, 0);
  for (int i = 0; i < n; i++) {
    uint64_t token = events[i].data.u64;
    if (token == kListenerToken) {
      Accept(/*serve=*/false);
    } else if (token == kTimerToken) {
      OnTimer();
    } else {
      DropAll();  // the guest cannot hear from them until it resets the device
    }
  }
}

// --- Host side -------------------------------------------------------------

void Muxer::Accept(bool serve) {
  for (int i = 0; i < kMaxAcceptsPerPoll; i++) {
    UniqueFd sock(accept4(listener_.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!sock.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) {
        // Out of fds: the backlog would stay ready, so rest the listener.
        LOG_WARN_RATELIMITED("vsock: accept on %s: %s; retrying in %d ms", config_.uds_path,
                             std::strerror(errno), kAcceptRetryMs);
        SetListenerRegistered(false);
        listener_paused_until_ms_ = NowMs() + kAcceptRetryMs;
        ArmTimer(listener_paused_until_ms_);
      }
      return;
    }
    if (!serve) continue;  // closed: the device cannot serve it now
    if (conns_.size() >= limits_.max_connections) {
      counters_->conns_refused++;
      LOG_WARN_RATELIMITED("vsock: %d connections already; closing a new one on %s",
                           conns_.size(), config_.uds_path);
      continue;
    }
    Connection& c = Add(std::move(sock), ConnState::kAwaitingConnect);
    SetDeadline(c, limits_.connect_line_timeout_ms);
    UpdateInterest(c);
  }
}

void Muxer::OnEvent(Connection& c, uint32_t events) {
  if (c.state == ConnState::kAwaitingConnect) {
    ReadConnectLine(c);
    return;
  }
  bool hup = events & (EPOLLHUP | EPOLLERR);
  if (hup) c.hup = true;
  if (c.state == ConnState::kConnecting) {
    // The host program gave up before the guest answered.
    if (hup) Remove(c, /*rst=*/c.request_sent, /*killed=*/false);
    return;
  }
  if (c.state != ConnState::kEstablished) return;
  uint64_t token = c.token;
  if (!c.tx.empty() && ((events & EPOLLOUT) || hup)) {
    Flush(c);
    if (Find(token) == nullptr) return;
  }
  bool reading_done = c.host_eof || (c.peer_shutdown & kShutdownRcv);
  if (hup && reading_done) {
    HostGone(c);
    return;
  }
  if (((events & EPOLLIN) || hup) && !reading_done) {
    c.readable = true;
    Queue(c);
  }
  UpdateInterest(c);
}

void Muxer::ReadConnectLine(Connection& c) {
  // A byte at a time: what follows the newline is the stream's, and stays
  // in the socket until the guest can take it.
  for (;;) {
    char ch;
    ssize_t n = read(c.fd.get(), &ch, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      Remove(c, false, false);  // the host program went away
      return;
    }
    if (ch != '\n') {
      c.line.push_back(ch);
      if (c.line.size() >= kMaxConnectLine) break;
      continue;
    }
    std::optional<uint32_t> port = ParseConnectLine(c.line);
    if (!port) break;
    c.line = std::string();
    c.state = ConnState::kConnecting;
    SetPorts(c, AllocatePort(), *port);
    c.want_request = true;
    counters_->conns_added++;
    SetDeadline(c, limits_.request_timeout_ms);
    Queue(c);
    UpdateInterest(c);
    return;
  }
  LOG_WARN_RATELIMITED("vsock: a host connection on %s sent \"%s\", not \"CONNECT <port>\\n\"; "
                       "closed", config_.uds_path, absl::CEscape(c.line));
  Remove(c, false, false);
}

bool Muxer::AfterForward(Connection& c) {
  if (c.tx.empty()) {
    if ((c.peer_shutdown & kShutdownBoth) == kShutdownBoth) {
      // The guest closed, and all it sent is out.
      Remove(c, /*rst=*/true, /*killed=*/false);
      return false;
    }
    // The host program reads EOF where the guest stopped sending.
    if (c.peer_shutdown & kShutdownSend) shutdown(c.fd.get(), SHUT_WR);
  }
  // Tell the guest once a good part of our buffer came free since it last heard.
  if (c.fwd_cnt - c.last_fwd_cnt_sent >= limits_.buf_alloc / 2) {
    c.want_credit_update = true;
    Queue(c);
  }
  UpdateInterest(c);
  return true;
}

void Muxer::Flush(Connection& c) {
  ssize_t n = c.tx.FlushTo(c.fd.get());
  if (n < 0) {
    if (errno == EAGAIN) return;
    counters_->tx_flush_fails++;
    LOG_DEBUG_RATELIMITED("vsock: writing to the host socket of port %d: %s", c.local_port,
                          std::strerror(errno));
    Kill(c);
    return;
  }
  c.fwd_cnt += static_cast<uint32_t>(n);
  counters_->tx_bytes_count += n;
  AfterForward(c);
}

bool Muxer::HostGone(Connection& c) {
  c.fd.reset();
  c.registered = false;
  c.events = 0;
  c.readable = false;
  c.tx.Clear();
  if ((c.peer_shutdown & kShutdownBoth) == kShutdownBoth) {
    Remove(c, /*rst=*/true, /*killed=*/false);
    return false;
  }
  // The guest answers with an RST (Linux does once it has read the rest).
  c.state = ConnState::kClosing;
  c.want_shutdown = kShutdownBoth;
  Queue(c);
  SetDeadline(c, limits_.shutdown_timeout_ms);
  return true;
}

void Muxer::OnTimer() {
  uint64_t expirations;
  (void)!read(timer_.get(), &expirations, sizeof(expirations));
  armed_ms_ = 0;
  int64_t now = NowMs();
  if (listening_ && !listener_registered_ && now >= listener_paused_until_ms_) {
    SetListenerRegistered(true);
  }
  std::vector<uint64_t> expired;
  for (const auto& [token, c] : conns_) {
    if (c->deadline_ms != 0 && c->deadline_ms <= now) expired.push_back(token);
  }
  for (uint64_t token : expired) {
    Connection* found = Find(token);
    if (found == nullptr) continue;
    Connection& c = *found;
    c.deadline_ms = 0;
    switch (c.state) {
      case ConnState::kAwaitingConnect:
        LOG_DEBUG_RATELIMITED("vsock: a host connection on %s sent no CONNECT line in time",
                              config_.uds_path);
        Remove(c, false, false);
        break;
      case ConnState::kConnecting:
        LOG_DEBUG_RATELIMITED("vsock: guest port %d did not answer a connection in time",
                              c.peer_port);
        Remove(c, /*rst=*/c.request_sent, /*killed=*/true);
        break;
      case ConnState::kEstablished:  // closed by the guest, still flushing
      case ConnState::kClosing:      // closed by the host, no RST from the guest
        Kill(c);
        break;
    }
  }
  int64_t next = 0;
  for (const auto& [token, c] : conns_) {
    if (c->deadline_ms != 0 && (next == 0 || c->deadline_ms < next)) next = c->deadline_ms;
  }
  if (listening_ && !listener_registered_) {
    next = next == 0 ? listener_paused_until_ms_ : std::min(next, listener_paused_until_ms_);
  }
  if (next != 0) ArmTimer(next);
}

void Muxer::SetDeadline(Connection& c, int64_t ms_from_now) {
  c.deadline_ms = NowMs() + std::max<int64_t>(ms_from_now, 1);
  ArmTimer(c.deadline_ms);
}

void Muxer::ArmTimer(int64_t at_ms) {
  // Never later than it is: OnTimer finds the next deadline when it fires.
  if (armed_ms_ != 0 && armed_ms_ <= at_ms) return;
  itimerspec when = {};
  when.it_value.tv_sec = at_ms / 1000;
  when.it_value.tv_nsec = (at_ms % 1000) * 1000000;
  if (timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &when, nullptr) == 0) armed_ms_ = at_ms;
}

// Which events a stream's socket is polled for:
//  - input only while the guest can take it: not while earlier input
//    waits for a receive buffer (`readable`), nor without credit;
//  - output while guest bytes wait in the stream's buffer;
//  - none, but still registered, while it only waits for the host to hang
//    up (EPOLLHUP is always reported), so that a hang-up is noticed;
//  - otherwise it is out of the epoll, since a hang-up nobody can act on
//    would be reported again and again.
void Muxer::UpdateInterest(Connection& c) {
  if (!c.fd.valid()) return;
  uint32_t want = 0;
  bool watch = false;
  switch (c.state) {
    case ConnState::kAwaitingConnect:
      want = EPOLLIN;
      break;
    case ConnState::kConnecting:
      watch = true;
      break;
    case ConnState::kEstablished: {
      bool reading_done = c.host_eof || (c.peer_shutdown & kShutdownRcv);
      if (!reading_done && !c.readable && c.PeerCredit() > 0) want |= EPOLLIN;
      if (!c.tx.empty()) want |= EPOLLOUT;
      watch = reading_done;
      break;
    }
    case ConnState::kClosing:
      return;
  }
  bool reg = want != 0 || watch;
  if (reg == c.registered && (!reg || want == c.events)) return;
  epoll_event ev = {};
  ev.events = want;
  ev.data.u64 = c.token;
  int op = !reg ? EPOLL_CTL_DEL : c.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(epoll_.get(), op, c.fd.get(), &ev) != 0) {
    LOG_WARN_RATELIMITED("vsock: epoll_ctl for port %d: %s", c.local_port, std::strerror(errno));
    return;
  }
  c.registered = reg;
  c.events = want;
}

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

// --- Bookkeeping -----------------------------------------------------------

Connection* Muxer::Find(uint64_t token) {
  auto it = conns_.find(token);
  return it == conns_.end() ? nullptr : it->second.get();
}

Connection* Muxer::FindByKey(uint64_t key) {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : Find(it->second);
}

Connection& Muxer::Add(UniqueFd fd, ConnState state) {
  auto c = std::make_unique<Connection>();
  c->token = next_token_++;
  c->fd = std::move(fd);
  c->state = state;
  Connection& ref = *c;
  conns_.emplace(ref.token, std::move(c));
  return ref;
}

void Muxer::SetPorts(Connection& c, uint32_t local_port, uint32_t peer_port) {
  c.local_port = local_port;
  c.peer_port = peer_port;
  by_key_[c.key()] = c.token;
  local_ports_[local_port]++;
}

void Muxer::Remove(Connection& c, bool rst, bool killed) {
  bool has_ports = c.state != ConnState::kAwaitingConnect;
  // The guest never heard of a stream whose REQUEST is still ours to send.
  bool guest_knows = has_ports && !(c.state == ConnState::kConnecting && !c.request_sent);
  if (rst && guest_knows) QueueReset(kHostCid, c.local_port, c.peer_port);
  if (has_ports) {
    counters_->conns_removed++;
    if (killed) counters_->conns_killed++;
    by_key_.erase(c.key());
    auto port = local_ports_.find(c.local_port);
    if (port != local_ports_.end() && --port->second == 0) local_ports_.erase(port);
  }
  if (c.queued) ready_.erase(std::find(ready_.begin(), ready_.end(), c.token));
  conns_.erase(c.token);  // closing the fd takes it out of the epoll
}

void Muxer::Queue(Connection& c) {
  if (c.queued || !c.HasRx()) return;
  ready_.push_back(c.token);
  c.queued = true;
}

void Muxer::ResetReply(const PacketHeader& h) {
  if (h.op == kOpRst) return;  // never answer a reset with one
  QueueReset(h.dst_cid, h.dst_port, h.src_port);
}

void Muxer::QueueReset(uint64_t src_cid, uint32_t src_port, uint32_t dst_port) {
  if (resets_.size() >= limits_.max_queued_rst) {
    // A guest that does not read its receive queue: it will hear of the
    // stream's end when it next uses it.
    counters_->rst_dropped++;
    LOG_WARN_RATELIMITED("vsock: %d resets wait for receive buffers; one dropped",
                         resets_.size());
    return;
  }
  resets_.push_back({src_cid, src_port, dst_port});
}

uint32_t Muxer::AllocatePort() {
  // Firecracker's: round robin over [2^30, 2^31), skipping ports in use.
  do {
    local_port_last_ = ((local_port_last_ + 1) & ~(1u << 31)) | (1u << 30);
  } while (local_ports_.count(local_port_last_) != 0);
  return local_port_last_;
}

}  // namespace ember::virtio::vsock
