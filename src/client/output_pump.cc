#include "src/client/output_pump.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

namespace ember::client {

// Shared with the thread, which may outlive the pump (blocked in a write).
struct OutputPump::State {
  int fd, wake;
  std::mutex mu;
  std::condition_variable cv;
  std::string queue;     // pushed, not yet taken by the thread
  size_t unwritten = 0;  // pushed, not yet written
  bool failed = false;
  bool stop = false;
  bool no_thread = false;

  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (stop) return;
      std::string bytes;
      bytes.swap(queue);
      lock.unlock();
      bool ok = WriteAll(bytes);
      lock.lock();
      if (stop) return;  // the pump is gone, and `wake` with it
      bool was_full = unwritten > kBound;
      unwritten -= bytes.size();
      if (!ok) failed = true;
      if (!ok || (was_full && unwritten <= kBound)) (void)!write(wake, "w", 1);
      cv.notify_all();
      if (!ok) return;
    }
  }

  bool WriteAll(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = write(fd, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        poll(&p, 1, -1);
        continue;
      }
      if (n <= 0) return false;
      bytes.remove_prefix(n);
    }
    return true;
  }
};

OutputPump::OutputPump(int fd, int wake) : state_(std::make_shared<State>()) {
  state_->fd = fd;
  state_->wake = wake;
  try {
    std::thread([state = state_] { state->Run(); }).detach();
  } catch (const std::system_error&) {
    state_->no_thread = true;  // pids.max, say: write as the caller goes
  }
}

OutputPump::~OutputPump() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->stop = true;
  state_->cv.notify_all();
}

void OutputPump::Push(std::string_view bytes) {
  if (state_->no_thread) {
    if (!state_->failed && !state_->WriteAll(bytes)) state_->failed = true;
    return;
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->queue.append(bytes);
  state_->unwritten += bytes.size();
  state_->cv.notify_all();
}

bool OutputPump::Full() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->unwritten > kBound;
}

bool OutputPump::Failed() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->failed;
}

OutputPump::Drained OutputPump::Drain(int timeout_ms) {
  std::unique_lock<std::mutex> lock(state_->mu);
  bool done = state_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return state_->failed || state_->unwritten == 0;
  });
  if (state_->failed) return Drained::kFailed;
  return done ? Drained::kAll : Drained::kTimedOut;
}

}  // namespace ember::client
