// src/seccomp owns the seccomp policy format, its compiler
// (ember-seccompiler) and the per-thread filters at run time. It may use
// src/common only.
//
// Per-thread seccomp filters at run time. main chooses the filters (built
// in, from --seccomp-filter, or none); each thread installs its own kind's
// filter before it touches untrusted input: "api" before serving the
// socket, "vcpu" before its first KVM_RUN, "vmm" once the vCPUs run.
#pragma once

#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "src/seccomp/filter_file.h"

namespace ember::seccomp {

// The filters compiled from resources/seccomp/x86_64.json at build time.
std::span<const uint8_t> DefaultFilters();

// Reads a filter file (ember-seccompiler --output).
absl::StatusOr<FilterMap> LoadFilterFile(const std::string& path);

// From now on InstallThreadFilter installs these. Refuses a set without
// one of the thread kinds Ember runs.
absl::Status UseFilters(FilterMap filters);

// Installs the calling thread's filter (NO_NEW_PRIVS first); nothing if
// UseFilters was never called (--no-seccomp, unit tests).
absl::Status InstallThreadFilter(absl::string_view kind);

// A denied call raises SIGSYS: this handler logs the thread and the call
// and ends the process with kExitBadSyscall.
void InstallDenialHandler();

// The system call's name, or nullptr; async-signal-safe.
const char* SyscallName(long nr);

}  // namespace ember::seccomp
