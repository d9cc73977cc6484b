// One client connection of the agent: the protocol's state machine for one
// command, and the bytes between the connection and the command's pipes.
//
// The session never blocks and never starts anything itself: the agent's
// loop (agent.h) polls the descriptors the session names, hands it the
// events, starts its command when it asks, and tells it when it was reaped.
//
// Memory is bounded both ways: output waiting for a slow client stops the
// reading of the command's pipes, and stdin stays within the WINDOW the
// session grants (PROTOCOL.md), so the connection is always read.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "src/agent/fd.h"
#include "src/agent/protocol.h"
#include "src/agent/spawn.h"

namespace ember::agent {

class Session {
 public:
  // Which of the session's descriptors a pollfd is.
  enum class Channel { kSocket, kStdin, kStdout, kStderr };
  // Bytes queued for the client past which the command's output waits.
  static constexpr size_t kMaxOutput = 256 * 1024;

  explicit Session(Fd socket) : socket_(std::move(socket)) {}
  // Kills the command's process group if the client left before its end.
  ~Session() { Close(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends the descriptors to wait on and what for.
  void AddPollFds(std::vector<pollfd>* fds, std::vector<Channel>* channels) const;
  void Handle(Channel channel, short revents);

  // True once, when a valid EXEC arrived: the agent should start it.
  bool TakeSpawnRequest();
  // Whether its command may still be started (queued, client still there).
  bool ready_to_start() const { return state_ == State::kWaiting && pid_ < 0; }
  const ExecRequest& request() const { return request_; }
  // The agent forked the command; how exec went comes later.
  void OnSpawned(Spawned spawned);
  void OnExecOutcome(const ExecOutcome& outcome);
  // The agent could not even fork.
  void OnSpawnError(const std::string& message);
  void OnReaped(int wait_status);

  // Whether the agent should destroy the session.
  bool closed() const { return state_ == State::kClosed; }

 private:
  enum class State {
    kHello,    // waiting for the client's HELLO
    kExec,     // waiting for EXEC
    kWaiting,  // EXEC read; queued to start or starting
    kRunning,  // STARTED sent; streaming
    kDone,     // EXIT or ERROR queued; flushing, then close
    kClosed,
  };

  void ReadClient();
  void OnFrame(const Frame& frame);
  void ProtocolError(const std::string& message);
  void Fail(ErrorKind kind, const std::string& message);
  void Send(Type type, std::string_view payload) { AppendFrame(&out_, type, payload); }
  void Flush();
  void PumpOutput(Fd* pipe, Type type);
  void PumpStdin();
  void CloseStdinIfDone();
  // Counts `n` STDIN bytes as done with, and grants them back in batches.
  void StdinDone(size_t n);
  void SignalGroup(int signo);
  void ApplySize();
  void MaybeFinish();
  void Close();

  State state_ = State::kHello;
  Fd socket_;
  FrameDecoder decoder_{FrameDecoder::From::kClient};
  std::string out_;  // frames not yet written to the client
  ExecRequest request_;
  bool spawn_requested_ = false;

  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  std::vector<int> pending_signals_;  // SIGNALs that came before STARTED
  Fd tty_;                            // the terminal's master (kFlagTty)
  bool resize_pending_ = false;       // a RESIZE came before the terminal
  WindowSize size_;
  Fd stdin_w_, stdout_r_, stderr_r_;
  std::string stdin_;       // client bytes not yet written to the command
  bool stdin_eof_ = false;  // the client sent STDIN_EOF
  // STDIN bytes the client may still send (kStdinWindow at most), and
  // bytes taken off the queue since the last WINDOW gave them back.
  size_t stdin_credit_ = 0;
  size_t stdin_done_ = 0;
};

}  // namespace ember::agent
