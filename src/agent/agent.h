// The guest agent's server: one thread, one poll loop over the listening
// socket, every session's descriptors (session.h), a signalfd for SIGCHLD
// and the stop signals, and the status pipe of the command being started.
//
// Exec is serialised: the next command is forked only after the previous
// one's exec finished (its close-on-exec status pipe closed or reported a
// failure). On PVM hosts each exec costs about a second of emulated guest
// time, so overlapping them gains nothing; the commands still run side by
// side once started.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "src/agent/fd.h"
#include "src/agent/protocol.h"
#include "src/agent/session.h"

namespace ember::agent {

class Agent {
 public:
  // Connections served at once; more wait in the listen backlog.
  static constexpr size_t kMaxSessions = 128;

  // `listener` is a listening, non-blocking stream socket (listener.h).
  explicit Agent(Fd listener) : listener_(std::move(listener)) {}

  // Serves until SIGTERM or SIGINT, then kills every running command's
  // process group. Returns the exit status for main; 1 with a message on
  // stderr when the loop cannot be set up.
  int Run();

 private:
  struct Starting {  // the command whose exec is under way
    uint64_t session = 0;
    Fd status;
    ExecRequest request;  // for the error message
  };

  void Accept();
  void ReapChildren();
  void StartNext();
  void OnExecDone();
  Session* Find(uint64_t id);

  Fd listener_;
  Fd signals_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
  std::deque<uint64_t> start_queue_;
  Starting starting_;
  std::map<pid_t, uint64_t> children_;  // unreaped commands -> their session
};

}  // namespace ember::agent
