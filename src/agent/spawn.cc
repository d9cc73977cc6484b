#include "src/agent/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

#include "src/agent/container.h"
#include "src/agent/network.h"

extern char** environ;

namespace ember::agent {
namespace {

// The record a failing child writes to the status pipe: 8 bytes, under
// PIPE_BUF, so the parent reads all of it or nothing.
enum Stage : int32_t {
  kStageSetup = 1,
  kStageChdir = 2,
  kStageExec = 3,
  kStageRoot = 4,
  kStageUser = 5,
  kStageLimits = 6,
};
struct Failure {
  int32_t stage;
  int32_t err;
};

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

bool Pipe(Fd* read_end, Fd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end->reset(fds[0]);
  write_end->reset(fds[1]);
  return true;
}

[[noreturn]] void Fail(int status_fd, Stage stage, int err) {
  Failure f{stage, err};
  (void)!write(status_fd, &f, sizeof(f));
  _exit(127);
}

// Between fork and exec. The agent has one thread, so the child is a
// consistent copy, but it still only makes system calls: everything else
// was prepared by the parent.
// What the child needs besides its stdio, all prepared before fork.
struct ChildPlan {
  const char* cwd;
  const char* tty_slave;  // open as the controlling terminal and stdio; or null
  const ContainerSpec* container;  // or null
  std::vector<gid_t> groups;
};

// Drops every capability not in `keep` from the bounding set; the ones
// past the kernel's last (EINVAL) do not exist to drop.
bool DropBounding(uint64_t keep) {
  for (int cap = 0; cap < 64; ++cap) {
    if (keep >> cap & 1) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return false;
  }
  return true;
}

// Effective, permitted and inheritable as given, then the ambient set (a
// capability in it must be permitted and inheritable).
bool SetCapabilities(const ContainerSpec& c) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  for (int i = 0; i < 2; ++i) {
    data[i].effective = static_cast<uint32_t>(c.cap_effective >> (32 * i));
    data[i].permitted = static_cast<uint32_t>(c.cap_permitted >> (32 * i));
    data[i].inheritable = static_cast<uint32_t>(c.cap_inheritable >> (32 * i));
  }
  if (syscall(SYS_capset, &header, data) != 0) return false;
  if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return false;
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return false;
  // As runc: an ambient capability that cannot be raised (not permitted
  // and inheritable, or unknown to this kernel) is left out.
  for (int cap = 0; cap < 64; ++cap) {
    if (c.cap_ambient >> cap & 1) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
  }
  return true;
}

[[noreturn]] void RunChild(int stdin_fd, int stdout_fd, int stderr_fd, int status_fd,
                           const ChildPlan& plan, const std::vector<char*>& argv,
                           const std::vector<char*>& envp, const std::vector<std::string>& paths) {
  // The agent blocks SIGCHLD and ignores SIGPIPE, and may have been
  // started with signals ignored (a background job ignores SIGINT); a
  // command expects none of that, and an ignored signal stays ignored
  // across exec.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) sigaction(s, &dfl, nullptr);  // fails harmlessly for KILL, STOP
  if (setsid() < 0) Fail(status_fd, kStageSetup, errno);
  if (plan.tty_slave) {
    // Opened by the session leader, the terminal becomes its controlling
    // one (TIOCSCTTY says so explicitly).
    int slave = open(plan.tty_slave, O_RDWR | O_CLOEXEC);
    if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) Fail(status_fd, kStageSetup, errno);
    stdin_fd = stdout_fd = stderr_fd = slave;
  }
  // The pipe ends are all above 2 (the agent keeps 0-2 open), so dup2
  // always makes a new, inheritable descriptor.
  if (dup2(stdin_fd, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(stderr_fd, 2) < 0) {
    Fail(status_fd, kStageSetup, errno);
  }
  // Whatever the agent inherited without close-on-exec stays with it; the
  // status pipe stays open until exec.
  close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  if (const ContainerSpec* c = plan.container) {
    if (!c->root_dir.empty() && chroot(c->root_dir.c_str()) != 0) {
      Fail(status_fd, kStageRoot, errno);
    }
    if (!c->hostname.empty() && sethostname(c->hostname.data(), c->hostname.size()) != 0) {
      Fail(status_fd, kStageRoot, errno);
    }
    // The limits while the agent may still raise them (CAP_SYS_RESOURCE).
    for (const ContainerSpec::Rlimit& l : c->rlimits) {
      rlimit value{l.soft, l.hard};
      if (setrlimit(static_cast<__rlimit_resource>(l.resource), &value) != 0) {
        Fail(status_fd, kStageLimits, errno);
      }
    }
    // The bounding set while the agent's capabilities allow dropping it;
    // the others kept across the change of user, then set.
    if (c->set_capabilities &&
        (!DropBounding(c->cap_bounding) || prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)) {
      Fail(status_fd, kStageUser, errno);
    }
    if (setgroups(plan.groups.size(), plan.groups.data()) != 0 || setgid(c->gid) != 0 ||
        setuid(c->uid) != 0) {
      Fail(status_fd, kStageUser, errno);
    }
    if (c->set_capabilities && !SetCapabilities(*c)) Fail(status_fd, kStageUser, errno);
    if (c->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      Fail(status_fd, kStageUser, errno);
    }
  }
  if (chdir(plan.cwd) != 0) Fail(status_fd, kStageChdir, errno);
  // Like execvp: a missing file or directory moves on to the next
  // candidate, a permission problem is remembered, anything else stops.
  int err = ENOENT;
  bool denied = false;
  for (const auto& path : paths) {
    execve(path.c_str(), argv.data(), envp.data());
    err = errno;
    if (err == EACCES) denied = true;
    if (err != ENOENT && err != ENOTDIR && err != EACCES) break;
  }
  Fail(status_fd, kStageExec, denied && (err == ENOENT || err == ENOTDIR) ? EACCES : err);
}

}  // namespace

std::vector<std::string> MergeEnvironment(char** base, const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = base; e && *e; ++e) env.emplace_back(*e);
  for (const auto& entry : extra) {
    std::string_view name(entry.data(), entry.find('=') + 1);  // "NAME="
    bool replaced = false;
    for (auto& existing : env) {
      if (existing.compare(0, name.size(), name) == 0) {
        existing = entry;
        replaced = true;
      }
    }
    if (!replaced) env.push_back(entry);
  }
  return env;
}

std::vector<std::string> ContainerEnvironment(char** base, const std::vector<std::string>& spec) {
  static constexpr std::string_view kInherited = "GLIBC_TUNABLES=";
  std::vector<std::string> env = spec;
  for (const auto& e : env) {
    if (e.compare(0, kInherited.size(), kInherited) == 0) return env;
  }
  for (char** e = base; e && *e; ++e) {
    if (std::string_view(*e).substr(0, kInherited.size()) == kInherited) env.emplace_back(*e);
  }
  return env;
}

std::vector<std::string> ExecCandidates(const std::string& program, const std::string& path) {
  if (program.find('/') != std::string::npos) return {program};
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? end : end - start);
    out.push_back((dir.empty() ? "." : dir) + "/" + program);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

std::string SearchPath(const std::vector<std::string>& env) {
  std::string path = kDefaultPath;
  for (const auto& e : env) {
    if (e.compare(0, 5, "PATH=") == 0) path = e.substr(5);
  }
  return path;
}

namespace {

// A new pseudo-terminal: its master (close-on-exec) and the slave's path.
bool OpenTerminal(Fd* master, std::string* slave, std::string* error) {
  master->reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  char name[64];
  if (!master->valid() || grantpt(master->get()) != 0 || unlockpt(master->get()) != 0 ||
      ptsname_r(master->get(), name, sizeof(name)) != 0) {
    *error = std::string("cannot open a terminal: ") + strerror(errno);
    return false;
  }
  *slave = name;
  return true;
}

}  // namespace

bool Spawn(const ExecRequest& request, Spawned* out, std::string* error) {
  bool container = request.flags & ExecRequest::kFlagContainer;
  bool tty = request.flags & ExecRequest::kFlagTty;
  if (container && request.container.has_network &&
      !ConfigureNetwork(request.container.network, error)) {
    *error = "cannot set up the container's network: " + *error;
    return false;
  }
  if (container && !PrepareRoot(request.container, error)) return false;
  std::vector<std::string> env =
      container ? ContainerEnvironment(environ, request.env) : MergeEnvironment(environ, request.env);
  std::vector<std::string> paths = ExecCandidates(request.argv[0], SearchPath(env));
  std::vector<char*> argv, envp;
  for (const auto& a : request.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ChildPlan plan{request.cwd.empty() ? "/" : request.cwd.c_str(), nullptr,
                 container ? &request.container : nullptr, {}};
  for (uint32_t g : request.container.groups) plan.groups.push_back(g);

  Fd in_r, in_w, out_r, out_w, err_r, err_w, status_r, status_w, master;
  std::string slave;
  bool use_stdin = request.flags & ExecRequest::kFlagStdin;
  if (tty) {
    if (!OpenTerminal(&master, &slave, error)) return false;
    plan.tty_slave = slave.c_str();
    out_r.reset(fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
    if (use_stdin) in_w.reset(fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
    if (!out_r.valid() || (use_stdin && !in_w.valid())) {
      *error = std::string("cannot duplicate the terminal: ") + strerror(errno);
      return false;
    }
  } else {
    if (use_stdin ? !Pipe(&in_r, &in_w)
                  : (in_r.reset(open("/dev/null", O_RDONLY | O_CLOEXEC)), !in_r.valid())) {
      *error = std::string("cannot make the command's stdin: ") + strerror(errno);
      return false;
    }
    if (!Pipe(&out_r, &out_w) || !Pipe(&err_r, &err_w)) {
      *error = std::string("cannot make pipes: ") + strerror(errno);
      return false;
    }
  }
  if (!Pipe(&status_r, &status_w)) {
    *error = std::string("cannot make pipes: ") + strerror(errno);
    return false;
  }
  pid_t pid = fork();
  if (pid < 0) {
    *error = std::string("fork: ") + strerror(errno);
    return false;
  }
  if (pid == 0) {
    // The parent's ends of the terminal and pipes are close-on-exec.
    RunChild(in_r.get(), out_w.get(), err_w.get(), status_w.get(), plan, argv, envp, paths);
  }
  // The parent's ends are non-blocking: one slow command must not stall
  // the loop that serves all of them.
  for (Fd* fd : {&in_w, &out_r, &err_r}) {
    if (fd->valid()) fcntl(fd->get(), F_SETFL, O_NONBLOCK);
  }
  out->pid = pid;
  out->stdin_w = std::move(in_w);
  out->stdout_r = std::move(out_r);
  out->stderr_r = std::move(err_r);
  out->status_r = std::move(status_r);
  out->tty = std::move(master);
  return true;
}

ExecOutcome ReadExecOutcome(int status_fd, const ExecRequest& request) {
  ExecOutcome outcome;
  Failure f{};
  ssize_t n;
  do {
    n = read(status_fd, &f, sizeof(f));
  } while (n < 0 && errno == EINTR);
  if (n == 0) {
    outcome.started = true;
    return outcome;
  }
  if (n != static_cast<ssize_t>(sizeof(f))) {
    outcome.message = "the command's start could not be confirmed";
    return outcome;
  }
  const std::string& program = request.argv[0];
  switch (f.stage) {
    case kStageChdir:
      outcome.message = "cannot change to directory " + request.cwd + ": " + strerror(f.err);
      break;
    case kStageRoot:
      outcome.message = "cannot enter the container's root " + request.container.root_dir +
                        ": " + strerror(f.err);
      break;
    case kStageUser:
      outcome.message = "cannot become user " + std::to_string(request.container.uid) + ":" +
                        std::to_string(request.container.gid) + ": " + strerror(f.err);
      break;
    case kStageLimits:
      outcome.message = "cannot set the process's rlimits: " + std::string(strerror(f.err));
      break;
    case kStageExec:
      outcome.kind = f.err == ENOENT || f.err == ENOTDIR ? ErrorKind::kNotFound
                                                          : ErrorKind::kNotExecutable;
      outcome.message = "cannot run " + program + ": " + strerror(f.err);
      break;
    default:
      outcome.message = "cannot set up " + program + ": " + strerror(f.err);
  }
  return outcome;
}

}  // namespace ember::agent
