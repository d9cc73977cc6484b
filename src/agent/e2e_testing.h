// Helpers for agent_e2e_test.cc: run ember-agent and ember-exec as the
// real binaries (built beside the test, paths from CMake) and talk to them
// through pipes.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace ember::agent::testing {

// A started program with pipes to its stdin, stdout and stderr.
struct Process {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;
};

struct Result {
  int status = -1;  // exit code, or 128 + signal, like a shell
  std::string out, err;
};

inline Process Start(const std::vector<std::string>& argv) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) abort();
  Process p;
  p.pid = fork();
  if (p.pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(126);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  p.in = in[1];
  p.out = out[0];
  p.err = err[0];
  return p;
}

inline int WaitStatus(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

// Writes `input` to the process's stdin (then closes it) while collecting
// stdout and stderr, and waits for it to end.
inline Result Finish(Process p, const std::string& input = "") {
  Result r;
  size_t written = 0;
  fcntl(p.in, F_SETFL, O_NONBLOCK);
  if (input.empty()) close(p.in), p.in = -1;
  char buf[65536];
  while (p.out >= 0 || p.err >= 0 || p.in >= 0) {
    pollfd fds[3] = {{p.in, POLLOUT, 0}, {p.out, POLLIN, 0}, {p.err, POLLIN, 0}};
    if (poll(fds, 3, -1) < 0) continue;
    if (fds[0].revents) {
      ssize_t n = write(p.in, input.data() + written, input.size() - written);
      if (n > 0) written += n;
      if (n < 0 && errno != EAGAIN) written = input.size();
      if (written == input.size()) close(p.in), p.in = -1;
    }
    for (int i : {1, 2}) {
      if (!fds[i].revents) continue;
      int& fd = i == 1 ? p.out : p.err;
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 1 ? r.out : r.err).append(buf, n);
      } else if (n == 0 || errno != EINTR) {
        close(fd);
        fd = -1;
      }
    }
  }
  r.status = WaitStatus(p.pid);
  return r;
}

// Reads from fd until `text` has arrived (or EOF); returns what it read.
inline std::string ReadUntil(int fd, const std::string& text) {
  std::string got;
  char c;
  while (got.find(text) == std::string::npos && read(fd, &c, 1) == 1) got.push_back(c);
  return got;
}

}  // namespace ember::agent::testing
