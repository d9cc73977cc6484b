#include "src/devices/virtio/block/io_uring.h"

#include <sys/eventfd.h>

#include "src/common/errno_status.h"

namespace ember::virtio::block {

absl::StatusOr<std::unique_ptr<IoUring>> IoUring::Create(unsigned entries) {
  UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event.valid()) return ErrnoStatus("eventfd");
  std::unique_ptr<IoUring> uring(new IoUring(entries, std::move(event)));
  if (int err = io_uring_queue_init(entries, &uring->ring_, 0); err < 0) {
    uring->ring_.ring_fd = -1;
    return ErrnoStatus("io_uring_queue_init (io_engine Async)", -err);
  }
  if (int err = io_uring_register_eventfd(&uring->ring_, uring->event_.get()); err < 0) {
    return ErrnoStatus("io_uring_register_eventfd", -err);
  }
  return uring;
}

IoUring::~IoUring() {
  if (ring_.ring_fd >= 0) io_uring_queue_exit(&ring_);
}

}  // namespace ember::virtio::block
