// Ember's command line, compatible with Firecracker's for what Ember has.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/instance_id.h"

namespace ember {

struct CliOptions {
  std::string config_file;
  bool no_api = false;
  std::string api_sock = "/run/ember.socket";
  std::string id = "anonymous-instance";
  std::string level = "Info";
  size_t http_api_max_payload_size = 51200;
  bool no_seccomp = false;
  bool boot_timer = false;
  std::string seccomp_filter;       // empty: the built-in filters
  bool help = false;
  bool version = false;
};

// Parses argv[1..]; accepts "--opt value" and "--opt=value".
absl::StatusOr<CliOptions> ParseCli(const std::vector<std::string>& args);

extern const char kUsage[];

}  // namespace ember
