// Process exit codes, numbered as Firecracker's where they mean the same.
#pragma once

namespace ember {

enum ExitCode : int {
  kExitOk = 0,                  // the guest reset or shut down
  kExitGenericError = 1,        // a VMM or vCPU error stopped the VM
  kExitBadSyscall = 148,        // a seccomp filter denied a system call
  kExitBadConfiguration = 152,  // the configuration was refused before boot
  kExitArgParsing = 153,        // the command line was refused
};

// SIGINT or SIGTERM stopped the VM in order: 128 + the signal number, as a
// shell reports a process killed by it (130, 143).
inline constexpr int kExitSignalBase = 128;

}  // namespace ember
