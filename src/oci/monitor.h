// The container's monitor: the host process whose pid the shim gets from
// the pid file. It lives as long as the container's process in the guest
// and exits with its status (128 + N when signal N ended it), so the shim,
// its subreaper, sees the container end when it reaps the monitor.
//
//   create: forks the monitor, which starts ember (its child, killed with
//           it by the parent-death signal) and waits on exec.fifo;
//   start:  writes a byte to exec.fifo;
//   the monitor then connects to the guest agent through the VM's vsock
//   socket (waiting while the guest boots), runs the process with the
//   container's stdio (the fds the shim gave create, or the terminal whose
//   master went to the console socket) and relays signals sent to it
//   (`kill` signals the monitor); at the end it stops the VM and exits.
//
// An exec'd process has a monitor of its own (`exec`), without a VM.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "src/agent/protocol.h"
#include "src/client/exec_client.h"
#include "src/oci/spec.h"
#include "src/oci/template.h"
#include "src/oci/vm.h"
#include "src/oci/volumes.h"

namespace ember::oci {

// What a monitor runs: the request through the VM's socket with these
// stdio fds (a terminal's slave for all three when `tty_slave` >= 0).
struct MonitorPlan {
  client::ExecOptions exec;
  int tty_slave = -1;
  // The container's own monitor: the VM to start and the fifo `start`
  // writes to (a non-blocking read end). An exec's monitor has neither.
  bool owns_vm = false;
  // A Kubernetes pod's sandbox: the monitor runs no VM and nothing in one;
  // it stands where the sandbox's process (pause) would, until a signal
  // ends it (SIGTERM and SIGINT with 0, as pause).
  bool sandbox = false;
  VmAssets assets;
  VmLayout layout;
  std::string dir;      // the container's state directory
  int start_fifo = -1;
  // The VMM's pid (4 bytes) goes here once it runs (restored, with a
  // template), the monitor's own for a sandbox; or 0 and a message. Then
  // it is closed.
  int ready_fd = -1;
  bool restore = false;  // from the template rather than a cold boot
  TemplateFiles template_files;
  // The VM's TAP (network.h), made in the monitor's network namespace
  // before the VMM starts, joined to the namespace's interface at start,
  // removed when the monitor ends.
  std::string tap;
  // Read-only bind mounts whose host's changes a child of the monitor
  // carries into the guest once the process has started (volumes.h).
  std::vector<SyncedVolume> volumes;
  // Says why the guest got no network when the namespace had an interface
  // for it (ember-oci's log).
  std::function<void(const std::string&)> warn;
};

// In the forked monitor: never returns. Becomes a session leader (so the
// terminal's resizes reach it), puts /dev/null on its own stdio when the
// container has a terminal (the shim reads create's output until EOF), and
// exits with the process's status. At start the guest's network comes
// from the namespace's interface (ConnectTap): what it got, or why
// nothing, is written to <dir>/network.
[[noreturn]] void RunMonitor(MonitorPlan plan);

}  // namespace ember::oci
