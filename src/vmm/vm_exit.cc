#include "src/vmm/vm_exit.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "src/common/errno_status.h"

namespace ember {

absl::StatusOr<std::unique_ptr<VmExit>> VmExit::Create() {
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus("eventfd");
  return std::unique_ptr<VmExit>(new VmExit(std::move(fd)));
}

bool VmExit::Request(int code) {
  int expected = -1;
  bool first = code_.compare_exchange_strong(expected, code);
  uint64_t one = 1;
  (void)!::write(fd_.get(), &one, sizeof(one));
  return first;
}

}  // namespace ember
