// Instance ids name the VM in logs and the API, and its jail and cgroup on
// the host, so they must be safe as one path component.
#pragma once

#include <string>

#include "absl/strings/ascii.h"

namespace ember {

// Firecracker's rule: 1 to 64 characters, letters, digits and '-'.
inline bool ValidInstanceId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

}  // namespace ember
