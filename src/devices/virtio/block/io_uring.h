// An io_uring (liburing) whose completions signal an eventfd, for the
// VMM loop to watch. Owns the ring and the eventfd.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember::virtio::block {

class IoUring {
 public:
  // Fails (naming io_uring) where the host kernel has none or forbids it.
  static absl::StatusOr<std::unique_ptr<IoUring>> Create(unsigned entries);
  ~IoUring();

  io_uring* ring() { return &ring_; }
  int event_fd() const { return event_.get(); }
  unsigned entries() const { return entries_; }

 private:
  IoUring(unsigned entries, UniqueFd event) : entries_(entries), event_(std::move(event)) {}
  io_uring ring_ = {};
  unsigned entries_;
  UniqueFd event_;
};

}  // namespace ember::virtio::block
