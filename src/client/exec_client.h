// The host side of src/agent/PROTOCOL.md: runs one command in a guest
// through its agent and relays stdin, stdout, stderr, signals and the exit
// status, for ember-exec (exec_main.cc).
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "src/agent/protocol.h"

namespace ember::client {

// ember-exec's exit codes besides the command's own (docker exec's choice:
// one below the shell's "cannot execute" and "not found").
inline constexpr int kExitTimeout = 124;
inline constexpr int kExitFailure = 125;      // no connection, protocol, agent error
inline constexpr int kExitCannotRun = 126;    // found but not executable
inline constexpr int kExitNotFound = 127;

struct ExecOptions {
  std::string socket_path;
  // True: socket_path is the VM's vsock Unix socket (Firecracker's model),
  // so the connection starts with "CONNECT <port>\n" / "OK <n>\n". False:
  // an agent listening on unix:socket_path itself (tests).
  bool through_vmm = true;
  uint32_t port = agent::kDefaultPort;
  agent::ExecRequest request;  // kFlagStdin set: forward our stdin
  double timeout_s = 0;        // 0: none
  // Where the command's stdin comes from and its output goes.
  int stdin_fd = 0;
  int stdout_fd = 1;
  int stderr_fd = 2;
  // Signals passed on to the command (each is caught while RunExec runs).
  std::vector<int> forward_signals = {SIGINT, SIGTERM, SIGHUP};
  // With kFlagTty: the local terminal whose size the command's terminal
  // takes, at the start and at each SIGWINCH; -1: none.
  int size_from_fd = -1;
  // How long to keep trying to connect while the guest boots (no socket
  // yet, or nothing listening on the port); 0: one try. `gave_up`, when
  // set, is asked between tries and ends the waiting when it says true.
  double connect_wait_s = 0;
  std::function<bool()> gave_up;
  // When >= 0: once the agent has answered the EXEC, one NUL byte if the
  // command started, else why it did not (the agent's ERROR, a failed
  // connection); then it is closed. `exec` waits on it, as runc's does.
  int started_fd = -1;
};

// The signals a container's monitor forwards: every catchable one, the
// real-time ones included, except those about its own state (SIGCHLD,
// SIGPIPE, SIGWINCH) and the faults a program raises on itself.
std::vector<int> ForwardableSignals();

// Catches `signals` from now on for RunExec to forward, so that one sent
// before RunExec runs (while the guest boots) waits rather than ending the
// process. RunExec does it too. False when its pipe cannot be made.
bool CatchSignals(const std::vector<int>& signals);

// Runs the command, writing its output to our stdout and stderr and
// forwarding SIGINT, SIGTERM and SIGHUP to it. Returns what ember-exec
// should exit with: the command's status, 128 + signal when a signal
// ended it, or one of the codes above (with a message on stderr).
int RunExec(const ExecOptions& options);

// Sends one SYNC (protocol.h) through `connection`'s socket, waiting for
// the agent as connect_wait_s says and for its answer until timeout_s:
// true once the agent made the directory, else false with *error.
bool RunSync(const ExecOptions& connection, const agent::SyncRequest& request,
             std::string* error);

}  // namespace ember::client
