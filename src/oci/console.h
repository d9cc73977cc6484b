// Terminals for containers with process.terminal: a pseudo-terminal on
// the host whose master goes to the shim over --console-socket (as runc
// sends it: SCM_RIGHTS, the terminal's name as the data) and whose slave
// the container's monitor keeps, raw, relaying to the guest's terminal.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "src/agent/fd.h"

namespace ember::oci {

struct Pty {
  agent::Fd master;
  agent::Fd slave;  // raw: the guest's terminal does the line discipline
  std::string name;
};

// A new pseudo-terminal, both ends close-on-exec and not anyone's
// controlling terminal yet.
absl::Status OpenPty(Pty* pty);

// Connects to the Unix socket at `path` and sends `fd` with `name`.
absl::Status SendConsole(const std::string& path, int fd, const std::string& name);

// In the monitor, after setsid: makes `slave` its controlling terminal, so
// that a resize of the master (the shim's) arrives as SIGWINCH.
void TakeTerminal(int slave);

}  // namespace ember::oci
