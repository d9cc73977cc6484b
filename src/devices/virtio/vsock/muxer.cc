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

// Host connections taken per wakeup; the rest wait for the next one.
constexpr int kMaxAcceptsPerPoll = 16;
// How long the listener rests after accept4 failed for want of fds.
constexpr int64_t kAcceptRetryMs = 1000;

int64_t NowMs() { return static_cast<int64_t>(MonotonicMs()); }

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
  WakeSoon();
}

void Muxer::Stop() {
  listening_ = false;
  stop_owed_ = true;
  WakeSoon();
}

void Muxer::WakeSoon() {
  itimerspec soon = {};
  soon.it_value.tv_nsec = 1;
  if (timerfd_settime(timer_.get(), 0, &soon, nullptr) == 0) armed_ms_ = 1;
}

void Muxer::Settle() {
  if (stop_owed_) {
    stop_owed_ = false;
    DropAll();
    listener_paused_until_ms_ = 0;
    local_port_last_ = (1u << 30) - 1;
  }
  if (!listening_) {
    SetListenerRegistered(false);
  } else if (!listener_registered_ && NowMs() >= listener_paused_until_ms_) {
    SetListenerRegistered(true);
  }
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

void Muxer::Poll() { Dispatch(/*serve=*/true); }

void Muxer::Drain() { Dispatch(/*serve=*/false); }

void Muxer::Dispatch(bool serve) {
  Settle();
  epoll_event events[kMaxEvents];
  int n = epoll_wait(epoll_.get(), events, kMaxEvents, 0);
  for (int i = 0; i < n; i++) {
    uint64_t token = events[i].data.u64;
    if (token == kListenerToken) {
      Accept(serve);
    } else if (token == kTimerToken) {
      OnTimer();
    } else if (!serve) {
      DropAll();  // the guest cannot hear from them until it resets the device
    } else if (Connection* c = Find(token)) {
      OnEvent(*c, events[i].events);
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
