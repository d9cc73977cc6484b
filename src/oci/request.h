// The guest agent's EXEC request for a container's process (protocol.h),
// built from config.json or exec's process.json, and checked at `create`
// and `exec` against what the agent takes, so that a request it would
// refuse fails there, naming what to fix, rather than when the process
// starts (after `create` told the shim the container exists).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "src/agent/protocol.h"
#include "src/oci/spec.h"

namespace ember::oci {

// The agent's request for a container's process: its args, env, cwd, user
// and groups, the container's drive as its root, the host name (empty:
// unchanged), a terminal when process.terminal, and the mounts the agent
// makes in the guest (mounts.h).
agent::ExecRequest ContainerRequest(const ProcessSpec& process, const std::string& hostname,
                                    std::vector<agent::MountSpec> mounts = {});

// OK when the agent takes `request`: it fits one EXEC frame and the
// agent's own decoder accepts it (no NUL byte in a string, NAME=VALUE
// environment entries, mount targets below the root).
absl::Status CheckRequest(const agent::ExecRequest& request);

// At `create`, as runc's init does before it waits for `start`: an error
// when the process's program is nowhere the agent will look for it in the
// container's root file system `root` (the host's directory the image is
// made from), with runc's message ("exec: \"x\": executable file not
// found in $PATH"). Symbolic links resolve inside `root`; a program that
// one of the request's mounts could provide passes.
absl::Status FindProgram(const agent::ExecRequest& request, const std::string& root);

}  // namespace ember::oci
