// How any thread asks the VMM to stop the VM: the first request's exit code
// wins, and an eventfd wakes the VMM thread's loop.
#pragma once

#include <atomic>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember {

class VmExit {
 public:
  static absl::StatusOr<std::unique_ptr<VmExit>> Create();

  // Thread-safe; later requests keep the first code. True for the first.
  bool Request(int code);
  bool requested() const { return code_.load() >= 0; }
  int code() const { return code_.load(); }
  int fd() const { return fd_.get(); }

 private:
  explicit VmExit(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  std::atomic<int> code_{-1};
};

}  // namespace ember
