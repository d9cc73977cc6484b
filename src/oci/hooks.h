// config.json's hooks (the OCI runtime spec's POSIX-platform hooks), run
// as runc runs them: each is `path` with `args` (args[0] is its argv[0])
// and exactly `env`, the container's state JSON on its stdin, killed after
// `timeout` seconds. The guest shares no namespace with the host, so every
// hook runs on the host, at the spec's moment:
//   prestart, createRuntime, createContainer: in `create`, once the VMM runs;
//   startContainer: in `start`, before the process is started;
//   poststart: in `start`, after it was;
//   poststop: in `delete`, after the microVM is gone.
// A failure of the others fails the command, as in runc. A failing
// poststart or poststop hook is logged and the rest still run, as the
// spec says (runc stops at the first).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ember::oci {

struct Hook {
  std::string path;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::optional<int> timeout_s;
};

struct Hooks {
  std::vector<Hook> prestart, create_runtime, create_container, start_container, poststart,
      poststop;
  bool empty() const {
    return prestart.empty() && create_runtime.empty() && create_container.empty() &&
           start_container.empty() && poststart.empty() && poststop.empty();
  }
};

// The "hooks" object of config.json, as JSON text (absent: "{}"); read
// in spec.cc with the rest of config.json.
absl::StatusOr<Hooks> ParseHooks(absl::string_view json);

// Runs `hooks` in order with `state` on their stdin; the first failure
// (not found, a non-zero exit, the timeout) names the hook, `phase` and
// what it printed.
absl::Status RunHooks(const std::vector<Hook>& hooks, const std::string& state,
                      absl::string_view phase);

// Runs every one of `hooks`, whatever fails; returns each failure.
std::vector<absl::Status> RunEveryHook(const std::vector<Hook>& hooks, const std::string& state,
                                       absl::string_view phase);

}  // namespace ember::oci
