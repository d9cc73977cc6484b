#include "src/agent/session.h"

#include <errno.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "src/agent/container.h"
#include "src/agent/sync.h"

namespace ember::agent {

void Session::AddPollFds(std::vector<pollfd>* fds, std::vector<Channel>* channels) const {
  auto add = [&](const Fd& fd, short events, Channel channel) {
    fds->push_back({fd.get(), events, 0});
    channels->push_back(channel);
  };
  // Always read: STDIN stays within its window, so what comes is bounded.
  short socket_events = 0;
  if (state_ != State::kDone) socket_events |= POLLIN;
  if (!out_.empty()) socket_events |= POLLOUT;
  // Polled even for no events: POLLHUP says the client left.
  add(socket_, socket_events, Channel::kSocket);
  if (state_ != State::kRunning) return;
  if (stdin_w_.valid() && !stdin_.empty()) add(stdin_w_, POLLOUT, Channel::kStdin);
  if (out_.size() < kMaxOutput) {
    if (stdout_r_.valid()) add(stdout_r_, POLLIN, Channel::kStdout);
    if (stderr_r_.valid()) add(stderr_r_, POLLIN, Channel::kStderr);
  }
}

void Session::Handle(Channel channel, short revents) {
  if (state_ == State::kClosed) return;
  switch (channel) {
    case Channel::kSocket:
      if (revents & POLLOUT) Flush();
      if (state_ == State::kClosed) return;
      if (revents & (POLLIN | POLLHUP | POLLERR)) {
        if (state_ != State::kDone) {
          ReadClient();
        } else if (revents & (POLLHUP | POLLERR)) {
          Close();  // the client left while we were not reading
        }
      }
      break;
    case Channel::kStdin:
      PumpStdin();
      break;
    case Channel::kStdout:
      PumpOutput(&stdout_r_, Type::kStdout);
      break;
    case Channel::kStderr:
      PumpOutput(&stderr_r_, Type::kStderr);
      break;
  }
  if (state_ == State::kRunning) MaybeFinish();
  if (state_ == State::kDone) Flush();
}

void Session::ReadClient() {
  char buf[64 * 1024];
  ssize_t n = read(socket_.get(), buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    // The client went away (or the connection broke) before EXIT: whatever
    // it started must not outlive it.
    Close();
    return;
  }
  decoder_.Feed(std::string_view(buf, n));
  Frame frame;
  std::string error;
  // Every complete frame now, not one per read: a frame left in the
  // decoder would wait for bytes the client may never send.
  while (state_ != State::kDone && state_ != State::kClosed) {
    auto result = decoder_.Next(&frame, &error);
    if (result == FrameDecoder::Result::kNeedMore) break;
    if (result == FrameDecoder::Result::kBad) {
      ProtocolError(error);
      break;
    }
    OnFrame(frame);
  }
}

void Session::OnFrame(const Frame& frame) {
  uint32_t value;
  std::string error;
  switch (state_) {
    case State::kHello:
      if (frame.type != Type::kHello || !DecodeU32(frame.payload, &value)) {
        return ProtocolError("expected HELLO");
      }
      Send(Type::kHello, EncodeU32(kVersion));
      if (value != kVersion) {
        return Fail(ErrorKind::kOther, "unsupported protocol version " + std::to_string(value) +
                                           " (this agent speaks " + std::to_string(kVersion) +
                                           ")");
      }
      state_ = State::kExec;
      return;
    case State::kExec:
      // Quick (a tree of at most 2 MiB): done here, in the agent's loop.
      if (frame.type == Type::kSync) {
        SyncRequest sync;
        if (!DecodeSync(frame.payload, &sync, &error) || !Sync(sync, &error)) {
          return Fail(ErrorKind::kOther, error);
        }
        Send(Type::kSynced, "");
        state_ = State::kDone;
        return;
      }
      if (frame.type != Type::kExec) return ProtocolError("expected EXEC or SYNC");
      if (!DecodeExec(frame.payload, &request_, &error)) return Fail(ErrorKind::kOther, error);
      state_ = State::kWaiting;
      spawn_requested_ = true;
      if (request_.flags & ExecRequest::kFlagStdin) {
        stdin_credit_ = kStdinWindow;
        Send(Type::kWindow, EncodeU32(kStdinWindow));
      }
      return;
    case State::kWaiting:
    case State::kRunning:
      break;
    case State::kDone:
    case State::kClosed:
      return;
  }
  bool use_stdin = request_.flags & ExecRequest::kFlagStdin;
  WindowSize size;
  switch (frame.type) {
    case Type::kResize:
      if (!(request_.flags & ExecRequest::kFlagTty) || !DecodeResize(frame.payload, &size)) {
        return ProtocolError("RESIZE without a terminal, or malformed");
      }
      size_ = size;
      resize_pending_ = true;
      ApplySize();
      return;
    case Type::kStdin:
      if (!use_stdin || stdin_eof_) return ProtocolError("STDIN after EOF or without the flag");
      if (frame.payload.size() > stdin_credit_) return ProtocolError("STDIN past its WINDOW");
      stdin_credit_ -= frame.payload.size();
      // Once the command closed its stdin, the rest is dropped, as a pipe
      // would.
      if (state_ == State::kWaiting || stdin_w_.valid()) {
        stdin_.append(frame.payload);
      } else {
        StdinDone(frame.payload.size());
      }
      return;
    case Type::kStdinEof:
      if (!use_stdin || stdin_eof_) return ProtocolError("second STDIN_EOF or without the flag");
      stdin_eof_ = true;
      CloseStdinIfDone();
      return;
    case Type::kSignal:
      if (!DecodeU32(frame.payload, &value) || value < 1 || value > 64) {
        return ProtocolError("bad SIGNAL");
      }
      if (state_ == State::kRunning) {
        SignalGroup(static_cast<int>(value));
      } else if (std::find(pending_signals_.begin(), pending_signals_.end(), value) ==
                 pending_signals_.end()) {
        // Each at most once, as the kernel keeps a pending signal: a client
        // repeating one while the command waits to start grows nothing.
        pending_signals_.push_back(static_cast<int>(value));
      }
      return;
    default:
      return ProtocolError("unexpected frame type " +
                           std::to_string(static_cast<int>(frame.type)));
  }
}

void Session::ProtocolError(const std::string& message) {
  Fail(ErrorKind::kOther, "protocol error: " + message);
}

// ERROR is the last frame; a command already running goes with it.
void Session::Fail(ErrorKind kind, const std::string& message) {
  if (pid_ > 0 && !reaped_) SignalGroup(SIGKILL);
  stdin_w_.reset();
  stdout_r_.reset();
  stderr_r_.reset();
  tty_.reset();
  Send(Type::kError, EncodeError(kind, message));
  state_ = State::kDone;
}

void Session::Flush() {
  while (!out_.empty()) {
    ssize_t n = send(socket_.get(), out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) return Close();
    out_.erase(0, n);
  }
  if (state_ == State::kDone) Close();
}

void Session::PumpOutput(Fd* pipe, Type type) {
  char buf[kMaxPayload];
  ssize_t n = read(pipe->get(), buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    pipe->reset();  // EOF: every writer closed it
    return;
  }
  Send(type, std::string_view(buf, n));
}

void Session::PumpStdin() {
  ssize_t n = write(stdin_w_.get(), stdin_.data(), stdin_.size());
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) {
    // EPIPE: the command closed its stdin; what is left has no reader.
    size_t dropped = stdin_.size();
    stdin_.clear();
    stdin_w_.reset();
    StdinDone(dropped);
    return;
  }
  stdin_.erase(0, n);
  StdinDone(n);
  CloseStdinIfDone();
}

void Session::StdinDone(size_t n) {
  stdin_done_ += n;
  // A quarter of the window at a time: few WINDOWs, and the client never
  // waits long with a command that reads.
  if (stdin_done_ < kStdinWindow / 4 && !(stdin_.empty() && stdin_done_ > 0)) return;
  stdin_credit_ += stdin_done_;
  Send(Type::kWindow, EncodeU32(static_cast<uint32_t>(stdin_done_)));
  stdin_done_ = 0;
}

void Session::ApplySize() {
  if (!resize_pending_ || !tty_.valid()) return;
  winsize ws{};
  ws.ws_row = size_.rows;
  ws.ws_col = size_.cols;
  ioctl(tty_.get(), TIOCSWINSZ, &ws);  // the kernel signals the group (SIGWINCH)
  resize_pending_ = false;
}

void Session::CloseStdinIfDone() {
  // A terminal has no end of input: its master stays open for the output.
  if (tty_.valid()) return;
  if (stdin_eof_ && stdin_.empty() && state_ == State::kRunning) stdin_w_.reset();
}

void Session::SignalGroup(int signo) {
  // The command leads its own process group (setsid in spawn.cc); the
  // group outlives it while anything it started runs, and its id cannot be
  // reused meanwhile.
  if (kill(-pid_, signo) != 0 && !reaped_) kill(pid_, signo);
}

bool Session::TakeSpawnRequest() {
  bool requested = spawn_requested_;
  spawn_requested_ = false;
  return requested && ready_to_start();
}

void Session::OnSpawned(Spawned spawned) {
  pid_ = spawned.pid;
  stdin_w_ = std::move(spawned.stdin_w);
  stdout_r_ = std::move(spawned.stdout_r);
  stderr_r_ = std::move(spawned.stderr_r);
  tty_ = std::move(spawned.tty);
  ApplySize();  // before exec: the command starts with its size
}

void Session::OnExecOutcome(const ExecOutcome& outcome) {
  if (state_ != State::kWaiting) return;
  if (!outcome.started) return Fail(outcome.kind, outcome.message);
  Send(Type::kStarted, EncodeU32(static_cast<uint32_t>(pid_)));
  state_ = State::kRunning;
  for (int signo : pending_signals_) SignalGroup(signo);
  pending_signals_.clear();
  CloseStdinIfDone();
  MaybeFinish();
  if (state_ == State::kDone) Flush();
}

void Session::OnSpawnError(const std::string& message) {
  if (state_ != State::kWaiting) return;
  Fail(ErrorKind::kOther, message);
  Flush();
}

void Session::OnReaped(int wait_status) {
  reaped_ = true;
  wait_status_ = wait_status;
  if (request_.flags & ExecRequest::kFlagInit) KillProcessesIn(request_.container.root_dir);
  if (state_ == State::kRunning) MaybeFinish();
  if (state_ == State::kDone) Flush();
}

// EXIT only after the pipes' EOF too, so that no output comes after it.
void Session::MaybeFinish() {
  if (!reaped_ || stdout_r_.valid() || stderr_r_.valid()) return;
  ExitStatus status;
  if (WIFSIGNALED(wait_status_)) {
    status.signaled = true;
    status.value = WTERMSIG(wait_status_);
  } else {
    status.value = WEXITSTATUS(wait_status_);
  }
  stdin_w_.reset();
  tty_.reset();
  Send(Type::kExit, EncodeExit(status));
  state_ = State::kDone;
}

void Session::Close() {
  if (state_ == State::kClosed) return;
  // A command whose client left is killed with whatever it started.
  if (pid_ > 0 && (state_ == State::kWaiting || state_ == State::kRunning)) SignalGroup(SIGKILL);
  state_ = State::kClosed;
  socket_.reset();
  tty_.reset();
  stdin_w_.reset();
  stdout_r_.reset();
  stderr_r_.reset();
}

}  // namespace ember::agent
