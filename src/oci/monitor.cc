#include "src/oci/monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>

#include "src/agent/netlink.h"
#include "src/oci/console.h"
#include "src/oci/network.h"

namespace ember::oci {
namespace {

// Waits for `start`'s byte. Until a writer comes, the fifo reads as EOF.
// `during`, when given, is the signal mask while it waits: signals blocked
// otherwise are delivered then.
void WaitForStart(int fifo, const sigset_t* during = nullptr) {
  while (true) {
    pollfd p{fifo, POLLIN, 0};
    timespec tick{0, 100 * 1000 * 1000};
    ppoll(&p, 1, &tick, during);
    char c;
    ssize_t n = read(fifo, &c, 1);
    if (n == 1) return;
    if (n == 0 || errno == EAGAIN || errno == EINTR) {
      if (n == 0) usleep(50 * 1000);  // no writer yet: a closed fifo polls readable
      continue;
    }
    return;
  }
}

void StopVmm(pid_t vmm) {
  if (vmm <= 0) return;
  kill(vmm, SIGTERM);
  for (int i = 0; i < 40; ++i) {
    if (waitpid(vmm, nullptr, WNOHANG) == vmm) return;
    usleep(50 * 1000);
  }
  kill(vmm, SIGKILL);
  waitpid(vmm, nullptr, 0);
}

// Written whole under another name, then renamed: a reader never sees
// half of it.
void WriteNote(const std::string& path, const std::string& text) {
  std::string temporary = path + ".new";
  int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  if (!written || rename(temporary.c_str(), path.c_str()) != 0) unlink(temporary.c_str());
}

// Joins the namespace's interface to the VM's TAP and puts its settings
// into the request for the guest; notes the outcome.
absl::Status ConnectNetwork(MonitorPlan& plan) {
  auto connection = ConnectTap(plan.tap);
  if (!connection.ok()) return connection.status();
  std::string note = connection->why;
  if (connection->contested && plan.warn) plan.warn("the container has no network: " + note);
  if (connection->network) {
    agent::ContainerSpec& c = plan.exec.request.container;
    c.has_network = true;
    c.network = *connection->network;
    note.clear();
    for (const auto& a : c.network.addresses) {
      note += agent::netlink::FormatIpv4(a.address) + "/" + std::to_string(a.prefix) + " ";
    }
    note += "mtu " + std::to_string(c.network.mtu);
  }
  WriteNote(plan.dir + "/network", note + "\n");
  return absl::OkStatus();
}

// The volumes' syncer: a child that dies with the monitor, holds none of
// the container's stdio, and leaves the signals to the monitor.
void StartVolumeSync(const MonitorPlan& plan) {
  pid_t monitor = getpid();
  pid_t pid = fork();
  if (pid < 0 && plan.warn) {
    plan.warn("the read-only bind mounts will not follow their sources: fork failed");
  }
  if (pid != 0) return;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != monitor) _exit(0);
  for (int s : plan.exec.forward_signals) signal(s, SIG_IGN);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) {
    if (plan.warn) plan.warn("the read-only bind mounts will not follow their sources: no /dev/null");
    _exit(1);
  }
  for (int fd : {plan.exec.stdin_fd, plan.exec.stdout_fd, plan.exec.stderr_fd, plan.tty_slave}) {
    if (fd > 2) close(fd);
  }
  for (int fd = 0; fd <= 2; ++fd) dup2(null, fd);
  client::ExecOptions connection;
  connection.socket_path = plan.exec.socket_path;
  connection.through_vmm = plan.exec.through_vmm;
  connection.port = plan.exec.port;
  connection.connect_wait_s = 600;  // as the process's own: a guest may still be booting
  connection.timeout_s = 30;
  auto warn = plan.warn ? plan.warn : [](const std::string&) {};
  RunVolumeSync(plan.volumes, plan.exec.request.container.root_device, connection, warn);
}

// A pod's sandbox: nothing runs, the monitor waits as pause would.
[[noreturn]] void RunSandbox(const MonitorPlan& plan) {
  // Blocked from here, so that one sent once `start` has returned ends it
  // with 0 as pause; while it waits for `start` they act as on runc's
  // waiting init.
  sigset_t stop, before;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, &before);
  if (plan.tty_slave >= 0) {
    // The shim reads create's output until EOF when it gave no stdio.
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2; ++fd) dup2(null, fd);
    if (null > 2) close(null);
    close(plan.tty_slave);
  }
  uint32_t self = static_cast<uint32_t>(getpid());
  (void)!write(plan.ready_fd, &self, sizeof(self));
  close(plan.ready_fd);
  WaitForStart(plan.start_fifo, &before);
  close(plan.start_fifo);
  int signo = 0;
  while (sigwait(&stop, &signo) != 0) {
  }
  _exit(0);
}

}  // namespace

void RunMonitor(MonitorPlan plan) {
  setsid();
  signal(SIGPIPE, SIG_IGN);
  if (plan.sandbox) RunSandbox(plan);
  if (plan.tty_slave >= 0) {
    TakeTerminal(plan.tty_slave);
    // The shim reads create's (and exec's) stdout until EOF when it gave
    // no stdio: the monitor must not hold it.
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2; ++fd) dup2(null, fd);
    if (null > 2) close(null);
    plan.exec.stdin_fd = plan.exec.stdout_fd = plan.exec.stderr_fd = plan.tty_slave;
    plan.exec.size_from_fd = plan.tty_slave;
  }
  plan.exec.forward_signals = client::ForwardableSignals();

  pid_t vmm = -1;
  if (plan.owns_vm) {
    bool jailed = !plan.layout.jail_dir.empty();
    // With its API either way: `pause` and `resume` go through it.
    std::string api = ApiSocket(plan.layout.jail_dir, plan.dir);
    std::string api_in_vm = jailed ? "/api.sock" : api;
    absl::Status status = MakeTap(plan.tap, jailed ? plan.assets.jail_uid : geteuid(),
                                  jailed ? plan.assets.jail_gid : getegid());
    absl::StatusOr<pid_t> started = absl::UnknownError("not started");
    if (status.ok()) {
      started = plan.restore ? StartVmm(plan.assets, plan.layout, plan.dir, api_in_vm, "")
                             : StartVmm(plan.assets, plan.layout, plan.dir, api_in_vm);
      status = started.status();
    }
    if (started.ok() && plan.restore) {
      status = RestoreFromTemplate(plan.layout, plan.template_files, api, plan.tap);
      if (!status.ok()) StopVmm(*started);
    }
    uint32_t pid = status.ok() ? static_cast<uint32_t>(*started) : 0;
    std::string message(status.message());
    // Before the report: create kills the monitor once it has it.
    if (!status.ok()) RemoveTap(plan.tap);
    (void)!write(plan.ready_fd, &pid, sizeof(pid));
    if (!status.ok()) (void)!write(plan.ready_fd, message.data(), message.size());
    close(plan.ready_fd);
    if (!status.ok()) _exit(1);
    vmm = *started;
    WaitForStart(plan.start_fifo);
    close(plan.start_fifo);
    // After create's hooks: a CNI plugin run by one (nerdctl's) has set
    // the namespace up by now.
    if (absl::Status s = ConnectNetwork(plan); !s.ok()) {
      std::string message = "ember-oci: cannot give the container its network: " +
                            std::string(s.message()) + "\n";
      (void)!write(plan.exec.stderr_fd, message.data(), message.size());
      StopVmm(vmm);
      RemoveTap(plan.tap);
      _exit(client::kExitFailure);
    }
    // Started: from now a `kill` is for the process, and one that comes
    // while the guest boots waits for it rather than ending the monitor
    // (before, the default dispositions act, as on runc's waiting init).
    client::CatchSignals(plan.exec.forward_signals);
    plan.exec.gave_up = [&vmm] {
      if (waitpid(vmm, nullptr, WNOHANG) != vmm) return false;
      vmm = -1;  // reaped: its pid is no longer ours to signal
      return true;
    };
    // A cold-booted guest is still starting programs when its agent
    // listens; the process's exec waits until they are done (a restored
    // one was snapshotted after that).
    if (!plan.restore) {
      WaitForConsole(plan.dir + "/console.log", kGuestSettled, 1800, plan.exec.gave_up);
    }
  }
  if (plan.owns_vm && !plan.volumes.empty()) StartVolumeSync(plan);
  // A boot takes tens of seconds on PVM hosts; on hardware, a fraction of one.
  plan.exec.connect_wait_s = 600;
  int status = client::RunExec(plan.exec);
  StopVmm(vmm);
  if (plan.owns_vm) RemoveTap(plan.tap);
  _exit(status);
}

}  // namespace ember::oci
