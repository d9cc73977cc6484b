// ember-jailer: builds a jail for one VMM and execs it there, as
// Firecracker's jailer does (see args.h for the command line, jail.h for
// the steps). Exit codes: 153 the command line was refused, 1 a step
// failed (the message names it); otherwise the VMM's own, after exec, or
// 0 once a daemonized or new-PID-namespace VMM is on its way.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/exit_code.h"
#include "src/common/unique_fd.h"
#include "src/common/version.h"
#include "src/jail/args.h"
#include "src/jail/cgroup.h"
#include "src/jail/jail.h"

namespace ember::jail {
namespace {

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "ember-jailer: %s\n", std::string(st.message()).c_str());
  return kExitGenericError;
}

uint64_t Us(double ms) { return static_cast<uint64_t>(ms * 1000); }

// What Firecracker's jailer tells its VMM about the start-up cost:
// when the jailer started, and how much CPU it spent (in this process
// before exec, and in the processes that forked it and exited).
struct StartTimes {
  uint64_t start_us = 0;        // CLOCK_MONOTONIC
  uint64_t earlier_cpu_us = 0;  // in parents that exited
};

// The process that execs the VMM: this one, or a child when the VMM goes
// to a new PID namespace or is daemonized (double fork, as Firecracker's:
// the caller's process exits once the pid file is written, and the VMM
// is in a new session without leading it, so it can never acquire a
// controlling terminal). Returns the exit code in every process that does
// not exec, nullopt in the one that does.
std::optional<int> SplitOffVmm(const JailerArgs& args, int jail_root, StartTimes* times) {
  const bool session_leader = getsid(0) == getpid();
  if (args.daemonize) {
    times->earlier_cpu_us += Us(ProcessCpuMs());
    pid_t child = fork();
    if (child < 0) return Fail(absl::InternalError("fork to daemonize failed"));
    if (child > 0) {
      int status = 0;
      if (waitpid(child, &status, 0) != child) return kExitGenericError;
      return WIFEXITED(status) ? WEXITSTATUS(status) : kExitGenericError;
    }
    if (setsid() < 0) return Fail(absl::InternalError("setsid failed"));
  }
  if (!args.daemonize && !args.new_pid_ns) {
    if (absl::Status st = WritePidFile(jail_root, args.pid_file_name(), getpid()); !st.ok()) {
      return Fail(st);
    }
    return std::nullopt;
  }
  times->earlier_cpu_us += Us(ProcessCpuMs());
  long flags = SIGCHLD | (args.new_pid_ns ? CLONE_NEWPID : 0);
  long pid = syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) return Fail(absl::InternalError("clone for the VMM failed"));
  if (pid > 0) {
    if (absl::Status st = WritePidFile(jail_root, args.pid_file_name(), pid); !st.ok()) {
      kill(pid, SIGKILL);  // a VMM nobody can find
      return Fail(st);
    }
    return kExitOk;
  }
  // Firecracker's rule: when the jailer leads a session, its exit would
  // send the new namespace's init a SIGHUP it handles.
  if (session_leader && !args.daemonize && setsid() < 0) {
    return Fail(absl::InternalError("setsid failed"));
  }
  return std::nullopt;
}

int Main(int argc, char** argv) {
  StartTimes times;
  times.start_us = Us(MonotonicMs());
  SanitizeProcess();
  absl::StatusOr<JailerArgs> parsed = ParseJailerArgs(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed.ok()) {
    std::fprintf(stderr, "ember-jailer: %s\n\n%s", std::string(parsed.status().message()).c_str(),
                 kJailerUsage);
    return kExitArgParsing;
  }
  const JailerArgs& args = *parsed;
  if (args.help) {
    std::fputs(kJailerUsage, stdout);
    return kExitOk;
  }
  if (args.version) {
    std::printf("ember-jailer v%s\n", kVersion);
    return kExitOk;
  }
  if (args.uid == 0 || args.gid == 0) {
    // Firecracker's jailer accepts 0 silently; Kata passes it.
    std::fprintf(stderr,
                 "ember-jailer: warning: --uid %u --gid %u: the VMM keeps root's powers in its "
                 "jail; only the chroot, namespaces, cgroups and seccomp filters hold it\n",
                 args.uid, args.gid);
  }
  absl::StatusOr<JailDirs> jail = CreateJail(args);
  if (!jail.ok()) return Fail(jail.status());
  absl::StatusOr<std::vector<DeviceNode>> devices = HostDevices();
  if (!devices.ok()) return Fail(devices.status());
  UniqueFd null_fd;
  if (args.daemonize && !(null_fd = UniqueFd(open("/dev/null", O_RDWR | O_CLOEXEC))).valid()) {
    return Fail(absl::InternalError("cannot open /dev/null"));
  }
  if (!args.netns.empty()) {
    if (absl::Status st = JoinNetns(args.netns); !st.ok()) return Fail(st);
  }
  if (absl::Status st = SetResourceLimits(args); !st.ok()) return Fail(st);
  // Before any fork below: children stay in the cgroup.
  if (absl::Status st = JoinCgroups(args, getpid()); !st.ok()) return Fail(st);
  if (absl::Status st = PivotIntoJail(*jail); !st.ok()) return Fail(st);
  *jail = {};  // the host's directories: nothing after this may hold them
  if (absl::Status st = MakeDevices(*devices, args.uid, args.gid); !st.ok()) return Fail(st);

  UniqueFd jail_root(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!jail_root.valid()) return Fail(absl::InternalError("cannot open the jail root"));
  if (std::optional<int> code = SplitOffVmm(args, jail_root.get(), &times)) return *code;
  jail_root = {};
  if (args.daemonize) {
    if (absl::Status st = StdioToNull(null_fd.get()); !st.ok()) return Fail(st);
    null_fd = {};
  }
  if (absl::Status st = DropPrivileges(args.uid, args.gid); !st.ok()) return Fail(st);

  // Firecracker's jailer passes these before the caller's arguments.
  const uint64_t cpu_us = Us(ProcessCpuMs());
  std::string exec_path = "/" + args.exec_name;
  std::vector<std::string> vmm_args = {
      args.exec_name, "--id", args.id,
      "--start-time-us", std::to_string(times.start_us),
      "--start-time-cpu-us", std::to_string(cpu_us),
      "--parent-cpu-time-us", std::to_string(times.earlier_cpu_us + cpu_us)};
  vmm_args.insert(vmm_args.end(), args.exec_args.begin(), args.exec_args.end());
  std::vector<char*> vmm_argv;
  for (std::string& a : vmm_args) vmm_argv.push_back(a.data());
  vmm_argv.push_back(nullptr);
  char* empty_env[] = {nullptr};
  execve(exec_path.c_str(), vmm_argv.data(), empty_env);
  return Fail(absl::InternalError(absl::StrCat("exec ", exec_path, " failed: ", strerror(errno))));
}

}  // namespace
}  // namespace ember::jail

int main(int argc, char** argv) { return ember::jail::Main(argc, argv); }
