// ember-jailer: builds a jail for one VMM and execs it there, as
// Firecracker's jailer does (see args.h for the command line, jail.h for
// the steps). Exit codes: 153 the command line was refused, 1 a step
// failed (the message names it); otherwise the VMM's own, after exec.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/jail/args.h"
#include "src/jail/cgroup.h"
#include "src/jail/jail.h"
#include "src/common/exit_code.h"

namespace ember::jail {
namespace {

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "ember-jailer: %s\n", std::string(st.message()).c_str());
  return kExitGenericError;
}

int Main(int argc, char** argv) {
  SanitizeProcess();
  absl::StatusOr<JailerArgs> parsed = ParseJailerArgs(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed.ok()) {
    std::fprintf(stderr, "ember-jailer: %s\n\n%s", std::string(parsed.status().message()).c_str(),
                 kJailerUsage);
    return kExitArgParsing;
  }
  const JailerArgs& args = *parsed;
  absl::StatusOr<JailDirs> jail = CreateJail(args);
  if (!jail.ok()) return Fail(jail.status());
  absl::StatusOr<std::vector<DeviceNode>> devices = HostDevices();
  if (!devices.ok()) return Fail(devices.status());
  int null_fd = -1;
  if (args.daemonize && (null_fd = open("/dev/null", O_RDWR)) < 0) {
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

  if (args.new_pid_ns || (args.daemonize && getpgrp() == getpid())) {
    // The VMM goes on in a child (pid 1 of a new PID namespace, or simply
    // not a process group leader so that it can start a session).
    long flags = SIGCHLD | (args.new_pid_ns ? CLONE_NEWPID : 0);
    long pid = syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr);
    if (pid < 0) return Fail(absl::InternalError("clone for the VMM failed"));
    if (pid > 0) {
      if (args.new_pid_ns) {
        std::ofstream(absl::StrCat("/", args.exec_name, ".pid")) << pid << "\n";
      }
      return kExitOk;
    }
  }
  if (args.daemonize) {
    if (absl::Status st = Daemonize(null_fd); !st.ok()) return Fail(st);
    close(null_fd);
  }
  if (absl::Status st = DropPrivileges(args.uid, args.gid); !st.ok()) return Fail(st);

  std::string exec_path = "/" + args.exec_name;
  std::vector<std::string> vmm_args = {args.exec_name, "--id", args.id};
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
