#include "src/oci/hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"

namespace ember::oci {
namespace {

// What a hook may print into an error message.
constexpr size_t kMaxOutput = 4096;

absl::Status RunOne(const Hook& hook, const std::string& state, absl::string_view phase) {
  std::string name = absl::StrCat(phase, " hook ", hook.path);
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat(name, ": pipe"));
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return absl::InternalError(absl::StrCat(name, ": pipe"));
  }
  std::vector<std::string> argv = hook.args.empty() ? std::vector<std::string>{hook.path}
                                                    : hook.args;
  std::vector<char*> args, env;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> envs = hook.env;
  for (std::string& e : envs) env.push_back(e.data());
  env.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // the timeout ends whatever it started too
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close_range(3, ~0U, 0);
    signal(SIGPIPE, SIG_DFL);
    execve(hook.path.c_str(), args.data(), env.data());
    dprintf(2, "cannot execute: %s", strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  if (pid < 0) {
    close(in[1]);
    close(out[0]);
    return absl::InternalError(absl::StrCat(name, ": fork"));
  }
  // A hook may exit without reading its stdin, or leave a process behind
  // holding its stdout: the state goes in as the hook takes it, and the
  // wait ends with the hook (its pidfd), not with its output.
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  size_t written = 0;
  std::string output;
  constexpr int kMaxTimeoutS = 24 * 3600;
  double deadline_ms =
      hook.timeout_s ? MonotonicMs() + 1000.0 * std::min(*hook.timeout_s, kMaxTimeoutS) : 0;
  bool timed_out = false, exited = false, out_open = true;
  while (!exited || out_open) {
    pollfd fds[3] = {{out_open ? out[0] : -1, POLLIN, 0},
                     {written < state.size() && in[1] >= 0 ? in[1] : -1, POLLOUT, 0},
                     {exited ? -1 : pidfd, POLLIN, 0}};
    int wait_ms = -1;
    if (deadline_ms > 0) wait_ms = static_cast<int>(std::max(0.0, deadline_ms - MonotonicMs())) + 1;
    if (exited) wait_ms = 0;  // take what output is there, no more
    int r = poll(fds, 3, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      if (!exited) {
        timed_out = true;
        kill(-pid, SIGKILL);
      }
      break;
    }
    if (fds[1].revents) {
      ssize_t n = write(in[1], state.data() + written, state.size() - written);
      if (n > 0) written += n;
      if (n < 0 && errno != EAGAIN) written = state.size();  // EPIPE: it stopped reading
    }
    if (written >= state.size() && in[1] >= 0) {
      close(in[1]);
      in[1] = -1;
    }
    if (fds[0].revents) {
      char buf[1024];
      ssize_t n = read(out[0], buf, sizeof(buf));
      if (n <= 0) {
        out_open = false;
      } else if (output.size() < kMaxOutput) {
        output.append(buf, std::min<size_t>(n, kMaxOutput - output.size()));
      }
    }
    if (fds[2].revents || (pidfd < 0 && !out_open)) exited = true;
  }
  if (in[1] >= 0) close(in[1]);
  close(out[0]);
  if (pidfd >= 0) close(pidfd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(
        absl::StrCat(name, " did not finish in ", *hook.timeout_s, " s: ", output));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, WIFEXITED(status) ? absl::StrCat(" exited ", WEXITSTATUS(status))
                                : absl::StrCat(" was killed by signal ", WTERMSIG(status)),
        output.empty() ? "" : ": ", output));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunHooks(const std::vector<Hook>& hooks, const std::string& state,
                      absl::string_view phase) {
  // A hook that exits without reading its stdin must not end us.
  signal(SIGPIPE, SIG_IGN);
  for (const Hook& hook : hooks) {
    if (auto s = RunOne(hook, state, phase); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::vector<absl::Status> RunEveryHook(const std::vector<Hook>& hooks, const std::string& state,
                                       absl::string_view phase) {
  signal(SIGPIPE, SIG_IGN);
  std::vector<absl::Status> failures;
  for (const Hook& hook : hooks) {
    if (auto s = RunOne(hook, state, phase); !s.ok()) failures.push_back(std::move(s));
  }
  return failures;
}

}  // namespace ember::oci
