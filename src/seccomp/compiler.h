// Compiles Ember's seccomp policy (resources/seccomp/*.json) into BPF with
// libseccomp. The policy, per thread kind:
//   "vcpu": {
//     "default_action": "trap", "filter_action": "allow",
//     "filter": [
//       {"syscall": "ioctl", "comment": "who needs it and why",
//        "args": [{"index": 1, "type": "dword", "op": "eq", "val": "KVM_RUN"}]}
//     ]
//   }
// Rules for one syscall are alternatives; the args of one rule must all
// hold. "val" and "mask" are numbers or names from the compiler's table
// (ioctl requests, PROT_*, MADV_*, ...), several joined with '|'.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "src/seccomp/filter_file.h"

namespace ember::seccomp {

// Errors name the thread, rule and field ("vcpu.filter[3].args[0].op: ...").
absl::StatusOr<FilterMap> CompilePolicy(absl::string_view json);

// For each thread kind, the number of distinct syscalls it may make.
absl::StatusOr<std::map<std::string, int>> CountAllowedSyscalls(absl::string_view json);

}  // namespace ember::seccomp
