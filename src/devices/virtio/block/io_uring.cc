#include "src/devices/virtio/block/io_uring.h"

#include <sys/eventfd.h>

#include <cerrno>

#include "src/common/errno_status.h"

namespace ember::virtio::block {
namespace {

io_uring_restriction Restriction(uint16_t opcode, uint8_t value) {
  io_uring_restriction r = {};
  r.opcode = opcode;
  switch (opcode) {
    case IORING_RESTRICTION_REGISTER_OP:
      r.register_op = value;
      break;
    case IORING_RESTRICTION_SQE_OP:
      r.sqe_op = value;
      break;
    default:  // IORING_RESTRICTION_SQE_FLAGS_ALLOWED, _REQUIRED
      r.sqe_flags = value;
      break;
  }
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<IoUring>> IoUring::Create(unsigned entries, int file) {
  UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event.valid()) return ErrnoStatus("eventfd");
  std::unique_ptr<IoUring> uring(new IoUring(entries, std::move(event)));
  io_uring* ring = &uring->ring_;
  // Disabled until restricted: nothing can be submitted before that.
  if (int err = io_uring_queue_init(entries, ring, IORING_SETUP_R_DISABLED); err < 0) {
    ring->ring_fd = -1;
    return ErrnoStatus("io_uring_queue_init (io_engine Async)", -err);
  }
  if (int err = io_uring_register_eventfd(ring, uring->event_.get()); err < 0) {
    return ErrnoStatus("io_uring_register_eventfd", -err);
  }
  if (int err = io_uring_register_files(ring, &file, 1); err < 0) {
    return ErrnoStatus("io_uring_register_files (the drive's file)", -err);
  }
  io_uring_restriction restrictions[] = {
      Restriction(IORING_RESTRICTION_SQE_OP, IORING_OP_READV),
      Restriction(IORING_RESTRICTION_SQE_OP, IORING_OP_WRITEV),
      Restriction(IORING_RESTRICTION_SQE_OP, IORING_OP_FSYNC),
      Restriction(IORING_RESTRICTION_SQE_FLAGS_ALLOWED, IOSQE_FIXED_FILE),
      Restriction(IORING_RESTRICTION_SQE_FLAGS_REQUIRED, IOSQE_FIXED_FILE),
      // Once enabled, every other registration (eventfd, files, buffers,
      // personalities, restrictions) is refused.
      Restriction(IORING_RESTRICTION_REGISTER_OP, IORING_REGISTER_FILES_UPDATE),
  };
  if (int err = io_uring_register_restrictions(ring, restrictions, std::size(restrictions));
      err < 0) {
    return ErrnoStatus("io_uring_register_restrictions", -err);
  }
  if (int err = io_uring_enable_rings(ring); err < 0) {
    return ErrnoStatus("io_uring_enable_rings", -err);
  }
  return uring;
}

IoUring::~IoUring() {
  if (ring_.ring_fd >= 0) io_uring_queue_exit(&ring_);
}

absl::Status IoUring::SetFile(int file) {
  int n = io_uring_register_files_update(&ring_, kFileIndex, &file, 1);
  if (n < 0) return ErrnoStatus("io_uring_register_files_update (the drive's new file)", -n);
  if (n != 1) return ErrnoStatus("io_uring_register_files_update (the drive's new file)", EIO);
  return absl::OkStatus();
}

absl::Status IoUring::WaitCompletion(std::chrono::steady_clock::time_point deadline) {
  const bool timed = ring_.features & IORING_FEAT_EXT_ARG;
  for (;;) {
    io_uring_cqe* cqe = nullptr;
    int err;
    if (timed) {
      auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        return absl::DeadlineExceededError("io_uring: requests still in flight");
      }
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      __kernel_timespec ts = {ns / 1000000000, ns % 1000000000};
      err = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    } else {
      err = io_uring_wait_cqe(&ring_, &cqe);
    }
    if (err == 0) return absl::OkStatus();
    // A signal (EINTR) or the timeout (ETIME): wait on until the deadline.
    if (err == -EINTR || err == -ETIME) continue;
    return ErrnoStatus("io_uring_wait_cqe", -err);
  }
}

}  // namespace ember::virtio::block
