#include "src/common/no_wait_output.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace ember {

int OwnNoWaitOpening(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return fd;
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  int own = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  return own >= 0 ? own : fd;
}

bool IsSocket(int fd) {
  struct stat st;
  return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

ssize_t WriteNoWait(int fd, bool socket, const void* data, size_t len) {
  return socket ? ::send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL) : ::write(fd, data, len);
}

}  // namespace ember
