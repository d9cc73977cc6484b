// A tree as Kubernetes' atomic writer lays out a volume, for the SYNC tests
// (sync_test.cc, agent_e2e_test.cc).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "src/agent/protocol.h"

namespace ember::agent::testing {

// The keys in the version's directory, `..data` a link to it, each key a
// link through `..data`; the top directory has `top_mode`.
inline std::vector<TreeEntry> Volume(const std::string& version,
                                     const std::vector<std::pair<std::string, std::string>>& keys,
                                     uint32_t top_mode = 0755) {
  std::vector<TreeEntry> v = {{TreeEntry::kDirectory, "", top_mode},
                              {TreeEntry::kDirectory, version, 0755}};
  for (const auto& [key, value] : keys) {
    v.push_back({TreeEntry::kFile, version + "/" + key, 0644, 0, 0, value});
  }
  v.push_back({TreeEntry::kLink, "..data", 0, 0, 0, version});
  for (const auto& [key, value] : keys) {
    v.push_back({TreeEntry::kLink, key, 0, 0, 0, "..data/" + key});
  }
  return v;
}

}  // namespace ember::agent::testing
