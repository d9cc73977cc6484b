// Process exit codes, numbered as Firecracker's where they mean the same.
#pragma once

#include "absl/status/status.h"

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

// The exit code for a VM that could not be built: configuration errors
// (the messages name the field or file) are 152, the rest 1.
inline int ExitCodeForBuildError(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
      return kExitBadConfiguration;
    default:
      return kExitGenericError;
  }
}

}  // namespace ember
