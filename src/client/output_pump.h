// Writes one stream of a command's output to its fd on a thread of its
// own, so that a reader that stops reading (a full pipe, a terminal held
// with ^S, a shim that stopped copying) holds up neither the forwarding of
// signals nor the timeout in RunExec's loop. RunExec stops taking the
// agent's output while a pump is full, and the agent then stops reading
// the command's, so the command blocks as it would on a full pipe.
#pragma once

#include <memory>
#include <string_view>

namespace ember::client {

class OutputPump {
 public:
  // What may wait to be written before the pump says it is full.
  static constexpr size_t kBound = 256 * 1024;

  // `fd`: where the output goes. `wake`: the write end of a non-blocking
  // pipe that gets a byte when the pump stops being full or a write fails.
  // Without a thread (none could be made) Push writes at once.
  OutputPump(int fd, int wake);
  // What is still queued is dropped: the thread, if it is blocked in a
  // write, is left to end with the process.
  ~OutputPump();
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  void Push(std::string_view bytes);
  bool Full() const;
  // A write failed: the reader left (EPIPE) or the fd is bad.
  bool Failed() const;
  enum class Drained { kAll, kFailed, kTimedOut };
  // Waits up to `timeout_ms` until everything pushed is written.
  Drained Drain(int timeout_ms);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace ember::client
