#include "src/common/open_no_wait.h"

#include <fcntl.h>

#include <cerrno>

namespace ember {

UniqueFd OpenNoWait(const std::string& path, int flags, mode_t mode) {
  UniqueFd fd(open(path.c_str(), flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode));
  if (!fd.valid()) return fd;
  int now = fcntl(fd.get(), F_GETFL);
  if (now < 0 || fcntl(fd.get(), F_SETFL, now & ~O_NONBLOCK) < 0) {
    int err = errno;
    fd.reset();
    errno = err;
  }
  return fd;
}

}  // namespace ember
