// An io_uring (liburing) for one drive, whose completions signal an eventfd
// for the VMM loop to watch. Owns the ring and the eventfd.
//
// The ring runs only what a drive needs. Its requests are executed by the
// kernel's io-wq workers, outside the VMM's seccomp filters, so an
// unrestricted ring would let code running in the VMM open files or
// sockets there. It is therefore created disabled, given the drive's file
// as its one registered (fixed) file and the restrictions below, and only
// then enabled:
//  - opcodes READV, WRITEV and FSYNC, nothing else (no OPENAT, SOCKET,
//    CONNECT, SEND, NOP...);
//  - every request must name the registered file (IOSQE_FIXED_FILE), and
//    may set no other flag;
//  - the only registration left is replacing that file (a drive swap).
// A request that breaks these completes with -EACCES.
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember::virtio::block {

class IoUring {
 public:
  // The registered file's index: what a request passes as its fd, with
  // IOSQE_FIXED_FILE set (UseFixedFile).
  static constexpr int kFileIndex = 0;

  // A restricted ring serving `file` (see above). Fails (naming io_uring)
  // where the host kernel has none, forbids it or cannot restrict it.
  static absl::StatusOr<std::unique_ptr<IoUring>> Create(unsigned entries, int file);
  ~IoUring();

  io_uring* ring() { return &ring_; }
  int event_fd() const { return event_.get(); }
  unsigned entries() const { return entries_; }

  // Serves `file` from now on (a drive swap); requests already submitted
  // finish on the file they started on. On failure nothing changes.
  absl::Status SetFile(int file);

  // Marks `sqe` (already prepared with kFileIndex as its fd) as using the
  // registered file, as the restrictions require.
  static void UseFixedFile(io_uring_sqe* sqe) { io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE); }

  // Waits until a completion is ready to reap, at most until `deadline`;
  // a signal does not end the wait early. DeadlineExceeded when it gave
  // up. (On kernels before 5.11, which cannot time the wait without a
  // timeout request the ring refuses, the wait is not bounded.)
  absl::Status WaitCompletion(std::chrono::steady_clock::time_point deadline);

 private:
  IoUring(unsigned entries, UniqueFd event) : entries_(entries), event_(std::move(event)) {}
  io_uring ring_ = {};
  unsigned entries_;
  UniqueFd event_;
};

}  // namespace ember::virtio::block
