#include "src/vmm/event_loop.h"

#include "src/common/errno_status.h"

namespace ember {

absl::StatusOr<EventLoop> EventLoop::Create() {
  UniqueFd fd(epoll_create1(EPOLL_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("epoll_create1");
  return EventLoop(std::move(fd));
}

absl::Status EventLoop::Add(int fd, uint32_t events, Handler handler) {
  epoll_event ev = {.events = events, .data = {.fd = fd}};
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) return ErrnoStatus("epoll_ctl ADD");
  handlers_[fd] = std::make_shared<Handler>(std::move(handler));
  return absl::OkStatus();
}

void EventLoop::Remove(int fd) {
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(fd);
}

absl::Status EventLoop::RunOnce(int timeout_ms) {
  epoll_event events[16];
  int n = epoll_wait(epoll_.get(), events, 16, timeout_ms);
  if (n < 0) return errno == EINTR ? absl::OkStatus() : ErrnoStatus("epoll_wait");
  for (int i = 0; i < n; i++) {
    auto it = handlers_.find(events[i].data.fd);
    if (it == handlers_.end()) continue;  // removed by an earlier handler
    std::shared_ptr<Handler> h = it->second;
    events_++;
    (*h)(events[i].events);
  }
  return absl::OkStatus();
}

}  // namespace ember
