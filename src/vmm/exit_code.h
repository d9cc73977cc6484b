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

}  // namespace ember
