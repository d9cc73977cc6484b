#include "src/client/exec_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "src/agent/fd.h"
#include "src/client/output_pump.h"

namespace ember::client {
namespace {

using agent::Fd;
using agent::Frame;
using agent::FrameDecoder;
using agent::Type;

// Stdin bytes queued for the agent past which we stop reading stdin.
constexpr size_t kMaxQueued = 256 * 1024;

// Caught signals become bytes in this pipe (made once, kept for the
// process's life), read by RunExec's loop.
int signal_pipe_r = -1;
int signal_pipe_w = -1;

void OnSignal(int signo) {
  int saved = errno;
  unsigned char byte = static_cast<unsigned char>(signo);
  (void)!write(signal_pipe_w, &byte, 1);
  errno = saved;
}

// What stopped the command before it started, for ExecOptions::started_fd.
std::string last_failure;

int Fail(const std::string& message, int code = kExitFailure) {
  std::fprintf(stderr, "ember-exec: %s\n", message.c_str());
  last_failure = message;
  return code;
}

// Tells started_fd, once, whether the command started ("") or why not.
void ReportStart(int* fd, const std::string& failure) {
  if (*fd < 0) return;
  std::string bytes = failure.empty() ? std::string(1, '\0') : failure;
  (void)!write(*fd, bytes.data(), bytes.size());
  close(*fd);
  *fd = -1;
}

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Milliseconds until the deadline for poll (at most a day: poll takes an
// int); -1 without one.
int PollTimeout(double deadline) {
  if (deadline == 0) return -1;
  double left = std::min(deadline - Now(), 86400.0);
  return left <= 0 ? 0 : static_cast<int>(left * 1000) + 1;
}

// Whether two descriptors are one file (a terminal, a pipe, a log file
// that takes both streams): then one pump keeps their order.
bool SameFile(int a, int b) {
  struct stat x, y;
  return a == b || (fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev &&
                    x.st_ino == y.st_ino);
}

// Writes everything, waiting when fd is non-blocking; false on an error.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, -1);
      continue;
    }
    if (n < 0) return false;
    data += n;
    size -= n;
  }
  return true;
}

Fd Connect(const std::string& path, std::string* error) {
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    *error = "socket path too long: " + path;
    return Fd();
  }
  memcpy(addr.sun_path, path.data(), path.size());
  if (!fd.valid() || connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = "cannot connect to " + path + ": " + strerror(errno);
    return Fd();
  }
  return fd;
}

// Firecracker's host-initiated vsock connection: "CONNECT <port>\n", then
// "OK <host port>\n" once the guest accepted. Read a byte at a time: what
// follows the line is already the agent's.
bool VmmHandshake(int fd, const ExecOptions& options, double deadline, std::string* error) {
  std::string line = "CONNECT " + std::to_string(options.port) + "\n";
  if (!WriteAll(fd, line.data(), line.size())) {
    *error = "cannot write to " + options.socket_path + ": " + strerror(errno);
    return false;
  }
  line.clear();
  while (line.size() < 64) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, PollTimeout(deadline)) == 0) {
      *error = "no answer to CONNECT from " + options.socket_path + " before the timeout";
      return false;
    }
    char c;
    ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "the guest agent is not listening on vsock port " +
               std::to_string(options.port) + " (" + options.socket_path +
               " closed the connection)";
      return false;
    }
    if (c == '\n') break;
    line.push_back(c);
  }
  if (line.rfind("OK ", 0) != 0 || line.size() == 3 ||
      line.find_first_not_of("0123456789", 3) != std::string::npos) {
    *error = "unexpected answer to CONNECT from " + options.socket_path + ": \"" + line + "\"";
    return false;
  }
  return true;
}

int ExitCodeOf(agent::ErrorKind kind) {
  switch (kind) {
    case agent::ErrorKind::kNotFound:
      return kExitNotFound;
    case agent::ErrorKind::kNotExecutable:
      return kExitCannotRun;
    default:
      return kExitFailure;
  }
}

// Connects and, through the VMM, does the handshake; with connect_wait_s,
// tries again every 100 ms while the guest is not there yet.
Fd ConnectToAgent(const ExecOptions& options, double deadline, std::string* error) {
  double give_up = Now() + options.connect_wait_s;
  while (true) {
    Fd sock = Connect(options.socket_path, error);
    if (sock.valid() &&
        (!options.through_vmm || VmmHandshake(sock.get(), options, deadline, error))) {
      return sock;
    }
    if (Now() >= give_up || (options.gave_up && options.gave_up())) return Fd();
    usleep(100 * 1000);
  }
}

void AppendSize(std::string* out, int fd) {
  winsize ws{};
  if (fd < 0 || ioctl(fd, TIOCGWINSZ, &ws) != 0) return;
  agent::AppendFrame(out, Type::kResize, agent::EncodeResize({ws.ws_row, ws.ws_col}));
}

}  // namespace

bool CatchSignals(const std::vector<int>& signals) {
  if (signal_pipe_w < 0) {
    int sp[2];
    if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) != 0) return false;
    signal_pipe_r = sp[0];
    signal_pipe_w = sp[1];
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sa.sa_flags = SA_RESTART;
  for (int s : signals) sigaction(s, &sa, nullptr);
  return true;
}

std::vector<int> ForwardableSignals() {
  std::vector<int> out;
  // The real-time ones too: systemd in a container stops on SIGRTMIN+3,
  // and uncaught they would end the monitor.
  for (int s = 1; s <= SIGRTMAX; ++s) {
    if (s >= 32 && s < SIGRTMIN) continue;  // glibc's own
    switch (s) {
      case SIGKILL: case SIGSTOP: case SIGCHLD: case SIGPIPE: case SIGWINCH:
      case SIGILL: case SIGTRAP: case SIGBUS: case SIGFPE: case SIGSEGV:
        continue;
      default:
        out.push_back(s);
    }
  }
  return out;
}

namespace {

int RunUntilExit(const ExecOptions& options, int* started_fd) {
  double deadline = options.timeout_s > 0 ? Now() + options.timeout_s : 0;
  std::string error;
  // Those that come while the guest boots wait in the pipe.
  bool tty = options.request.flags & agent::ExecRequest::kFlagTty;
  if (!CatchSignals(options.forward_signals) ||
      (tty && options.size_from_fd >= 0 && !CatchSignals({SIGWINCH}))) {
    return Fail(std::string("pipe: ") + strerror(errno));
  }

  Fd sock = ConnectToAgent(options, deadline, &error);
  if (!sock.valid()) return Fail(error);
  std::string payload = agent::EncodeExec(options.request);
  if (payload.size() > agent::kMaxExecPayload) {
    return Fail("the command and its environment take " + std::to_string(payload.size()) +
                " bytes; the agent takes at most " + std::to_string(agent::kMaxExecPayload));
  }
  std::string out;  // frames for the agent
  agent::AppendFrame(&out, Type::kHello, agent::EncodeU32(agent::kVersion));
  agent::AppendFrame(&out, Type::kExec, payload);
  if (tty) AppendSize(&out, options.size_from_fd);
  fcntl(sock.get(), F_SETFL, O_NONBLOCK);

  bool stdin_open = options.request.flags & agent::ExecRequest::kFlagStdin;
  size_t stdin_credit = 0;  // STDIN bytes the agent's WINDOWs allow
  bool hello = false;
  FrameDecoder decoder(FrameDecoder::From::kAgent);
  char buf[agent::kMaxPayload];
  // The output goes out on threads of their own (output_pump.h); one for
  // both streams when they are the same fd (a terminal), to keep order.
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) return Fail(std::string("pipe: ") + strerror(errno));
  Fd wake_r(wake[0]), wake_w(wake[1]);
  OutputPump stdout_pump(options.stdout_fd, wake_w.get());
  std::optional<OutputPump> own_stderr;
  if (!SameFile(options.stdout_fd, options.stderr_fd)) {
    own_stderr.emplace(options.stderr_fd, wake_w.get());
  }
  OutputPump& stderr_pump = own_stderr ? *own_stderr : stdout_pump;
  // Whatever the way out, the output received is written first, as when
  // each frame was written at once: after EXIT until the deadline or a
  // signal (ember-exec stays killable), else for at most 2 s. Returns -1
  // once all is written, else what to exit with.
  auto finish = [&](bool at_exit) {
    double limit = at_exit ? deadline : Now() + 2;
    for (OutputPump* pump : {&stdout_pump, &stderr_pump}) {
      while (true) {
        int ms = limit == 0 ? 100 : std::min(100, PollTimeout(limit));
        OutputPump::Drained d = pump->Drain(ms);
        if (d == OutputPump::Drained::kAll) break;
        if (d == OutputPump::Drained::kFailed) return 128 + SIGPIPE;
        if (limit != 0 && Now() >= limit) return kExitTimeout;
        unsigned char signo;
        if (at_exit && read(signal_pipe_r, &signo, 1) == 1 && signo != SIGWINCH) {
          return 128 + signo;
        }
      }
    }
    return -1;
  };
  auto fail = [&](const std::string& message, int code = kExitFailure) {
    finish(false);
    return Fail(message, code);
  };
  while (true) {
    bool full = stdout_pump.Full() || stderr_pump.Full();
    pollfd fds[4] = {{sock.get(),
                      static_cast<short>((full ? 0 : POLLIN) | (out.empty() ? 0 : POLLOUT)), 0},
                     {signal_pipe_r, POLLIN, 0},
                     {stdin_open && stdin_credit > 0 && out.size() < kMaxQueued
                          ? options.stdin_fd
                          : -1,
                      POLLIN, 0},
                     {wake_r.get(), POLLIN, 0}};
    int ready = poll(fds, 4, PollTimeout(deadline));
    if (ready < 0 && errno == EINTR) continue;
    // Not only when nothing came: a command that keeps writing must time
    // out too.
    if (deadline != 0 && Now() >= deadline) {
      // Closing the connection makes the agent kill the command.
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%g", options.timeout_s);
      return fail(std::string("timed out after ") + seconds + " s; the command was killed",
                  kExitTimeout);
    }
    if (fds[3].revents) {
      while (read(wake_r.get(), buf, sizeof(buf)) > 0) {
      }
    }
    // Our reader left (SIGPIPE ignored): end like a shell's filter would;
    // the agent kills the command when we close.
    if (stdout_pump.Failed() || stderr_pump.Failed()) return 128 + SIGPIPE;
    if (fds[1].revents) {
      unsigned char signo;
      while (read(signal_pipe_r, &signo, 1) == 1) {
        if (signo == SIGWINCH) {
          AppendSize(&out, options.size_from_fd);
        } else {
          agent::AppendFrame(&out, Type::kSignal, agent::EncodeU32(signo));
        }
      }
    }
    if (fds[2].revents) {
      ssize_t n = read(options.stdin_fd, buf, std::min(sizeof(buf), stdin_credit));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      } else if (n > 0) {
        stdin_credit -= n;
        agent::AppendFrame(&out, Type::kStdin, std::string_view(buf, n));
      } else {
        agent::AppendFrame(&out, Type::kStdinEof, "");
        stdin_open = false;
      }
    }
    if (!out.empty()) {
      ssize_t n = send(sock.get(), out.data(), out.size(), MSG_NOSIGNAL);
      if (n > 0) out.erase(0, n);
      // A failed send shows up below as the connection's end.
    }
    if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    ssize_t n = read(sock.get(), buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return fail("the agent closed the connection before the command finished");
    decoder.Feed(std::string_view(buf, n));
    Frame frame;
    while (true) {
      auto result = decoder.Next(&frame, &error);
      if (result == FrameDecoder::Result::kNeedMore) break;
      if (result == FrameDecoder::Result::kBad) return fail("bad frame from the agent: " + error);
      uint32_t value;
      agent::ErrorKind kind = agent::ErrorKind::kOther;
      agent::ExitStatus status;
      switch (frame.type) {
        case Type::kHello:
          if (!agent::DecodeU32(frame.payload, &value) || value != agent::kVersion) {
            return fail("the agent speaks another protocol version");
          }
          hello = true;
          break;
        case Type::kStarted:
          ReportStart(started_fd, "");
          break;
        case Type::kWindow:
          // Never more than the window outstanding: a guest granting more
          // breaks the protocol.
          if (!agent::DecodeU32(frame.payload, &value) ||
              stdin_credit + value > agent::kStdinWindow) {
            return fail("bad WINDOW from the agent");
          }
          stdin_credit += value;
          break;
        case Type::kError:
          if (!agent::DecodeError(frame.payload, &kind, &error)) error = "(no message)";
          return fail(error, ExitCodeOf(kind));
        case Type::kStdout:
        case Type::kStderr:
          (frame.type == Type::kStdout ? stdout_pump : stderr_pump).Push(frame.payload);
          break;
        case Type::kExit:
          // An exit code is a byte; a signal, 1 to 64.
          if (!hello || !agent::DecodeExit(frame.payload, &status) ||
              (status.signaled ? status.value == 0 || status.value > 64 : status.value > 255)) {
            return fail("bad EXIT from the agent");
          }
          // All of the output first, as before the status.
          if (int code = finish(true); code == kExitTimeout) {
            return Fail("timed out writing the command's output", kExitTimeout);
          } else if (code != -1) {
            return code;
          }
          return status.signaled ? 128 + static_cast<int>(status.value)
                                 : static_cast<int>(status.value);
        default:
          return fail("unexpected frame from the agent");
      }
    }
  }
}

}  // namespace

int RunExec(const ExecOptions& options) {
  int started_fd = options.started_fd;
  int status = RunUntilExit(options, &started_fd);
  ReportStart(&started_fd, last_failure.empty() ? "it ended before it started" : last_failure);
  return status;
}

bool RunSync(const ExecOptions& connection, const agent::SyncRequest& request,
             std::string* error) {
  // The handshake may come at the end of the wait for the guest.
  double deadline =
      connection.timeout_s > 0 ? Now() + connection.connect_wait_s + connection.timeout_s : 0;
  Fd sock = ConnectToAgent(connection, deadline, error);
  if (!sock.valid()) return false;
  deadline = connection.timeout_s > 0 ? Now() + connection.timeout_s : 0;
  std::string payload = agent::EncodeSync(request);
  if (payload.size() > agent::kMaxSyncPayload) {
    *error = "the directory takes " + std::to_string(payload.size()) +
             " bytes; the agent takes at most " + std::to_string(agent::kMaxSyncPayload);
    return false;
  }
  std::string out;
  agent::AppendFrame(&out, Type::kHello, agent::EncodeU32(agent::kVersion));
  agent::AppendFrame(&out, Type::kSync, payload);
  if (!WriteAll(sock.get(), out.data(), out.size())) {
    *error = std::string("cannot write to the agent: ") + strerror(errno);
    return false;
  }
  FrameDecoder decoder(FrameDecoder::From::kAgent);
  char buf[4096];
  while (true) {
    Frame frame;
    auto result = decoder.Next(&frame, error);
    if (result == FrameDecoder::Result::kBad) return false;
    if (result == FrameDecoder::Result::kFrame) {
      agent::ErrorKind kind;
      switch (frame.type) {
        case Type::kHello:
          continue;
        case Type::kSynced:
          return true;
        case Type::kError:
          if (!agent::DecodeError(frame.payload, &kind, error)) *error = "bad ERROR from the agent";
          return false;
        default:
          *error = "unexpected frame from the agent";
          return false;
      }
    }
    pollfd p{sock.get(), POLLIN, 0};
    if (poll(&p, 1, PollTimeout(deadline)) == 0) {
      *error = "no answer from the agent before the timeout";
      return false;
    }
    ssize_t n = read(sock.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "the agent closed the connection";
      return false;
    }
    decoder.Feed(std::string_view(buf, n));
  }
}

}  // namespace ember::client
