// Compiled seccomp filters, one BPF program per thread kind, in the file
// format ember-seccompiler writes and `ember --seccomp-filter` reads:
//   "EMBERBPF" | u32 version (1) | u32 count |
//   count x (u32 name length | name | u32 instruction count | instructions)
// Integers are little-endian; instructions are struct sock_filter as is.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::seccomp {

using BpfProgram = std::vector<sock_filter>;
// Thread kind ("vmm", "api", "vcpu") -> its program.
using FilterMap = std::map<std::string, BpfProgram>;

std::vector<uint8_t> SerializeFilters(const FilterMap& filters);
// Refuses anything but a whole, well-formed file; programs longer than the
// kernel's limit (BPF_MAXINSNS) are refused here rather than at install.
absl::StatusOr<FilterMap> ParseFilters(std::span<const uint8_t> bytes);

}  // namespace ember::seccomp
