// The VMM thread's epoll loop: fds with a handler each, dispatched in the
// thread that calls RunOnce. Handlers may add or remove fds.
#pragma once

#include <sys/epoll.h>

#include <functional>
#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember {

class EventLoop {
 public:
  using Handler = std::function<void(uint32_t events)>;

  static absl::StatusOr<EventLoop> Create();

  absl::Status Add(int fd, uint32_t events, Handler handler);
  void Remove(int fd);
  // Waits up to `timeout_ms` (-1: forever) and runs the ready handlers.
  absl::Status RunOnce(int timeout_ms);
  // Handlers run so far (the metrics' vmm.device_events).
  uint64_t events() const { return events_; }

 private:
  explicit EventLoop(UniqueFd epoll) : epoll_(std::move(epoll)) {}
  UniqueFd epoll_;
  // shared_ptr keeps a handler alive while it runs, even if it removes itself.
  std::map<int, std::shared_ptr<Handler>> handlers_;
  uint64_t events_ = 0;
};

}  // namespace ember
