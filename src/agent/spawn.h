// Starting one command for the agent: pipes for its stdio, a session and
// process group of its own (so a signal or a kill reaches what it started
// too), and a close-on-exec status pipe that tells the parent how exec went.
//
// The status pipe is also how the agent serialises exec (see agent.h): it
// closes, without data, at the moment exec succeeded.
#pragma once

#include <sys/types.h>

#include <string>

#include "src/agent/fd.h"
#include "src/agent/protocol.h"

namespace ember::agent {

struct Spawned {
  pid_t pid = -1;
  Fd stdin_w;   // invalid when the command's stdin is /dev/null
  Fd stdout_r;  // non-blocking
  Fd stderr_r;  // non-blocking
  Fd status_r;  // readable once exec succeeded (EOF) or failed (a record)
  Fd tty;       // kFlagTty: the terminal's master, for its size; else invalid
};

// Forks the command. With kFlagTty its stdio is a new pseudo-terminal,
// whose master is stdout_r (and, with kFlagStdin, stdin_w); with
// kFlagContainer its root is prepared (container.h) and entered, and it
// runs with the spec's user, groups and host name. Everything exec needs (argument and environment
// arrays, the PATH candidates) is built before fork. On failure before or
// at fork returns false with *error; nothing is left running.
bool Spawn(const ExecRequest& request, Spawned* out, std::string* error);

// How exec went, read from a readable status pipe.
struct ExecOutcome {
  bool started = false;
  ErrorKind kind = ErrorKind::kOther;
  std::string message;  // when !started
};
ExecOutcome ReadExecOutcome(int status_fd, const ExecRequest& request);

// The command's environment: the agent's own, with the request's entries
// replacing those of the same name and the rest appended.
std::vector<std::string> MergeEnvironment(char** base, const std::vector<std::string>& extra);

// A container process's environment: the spec's, plus the agent's own
// GLIBC_TUNABLES unless the spec sets it. On PVM hosts the guest kernel sets
// it for init and everything after, to keep glibc off the AVX registers it
// cannot switch between processes (docs/pvm-guest.md).
std::vector<std::string> ContainerEnvironment(char** base, const std::vector<std::string>& spec);

// Where exec looks for `program`: itself when it has a '/', else each PATH
// directory in turn (an empty one is the working directory).
std::vector<std::string> ExecCandidates(const std::string& program, const std::string& path);

// The PATH a command with environment `env` is looked up in: its own, or
// the usual directories without one.
std::string SearchPath(const std::vector<std::string>& env);

}  // namespace ember::agent
