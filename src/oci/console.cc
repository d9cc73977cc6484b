#include "src/oci/console.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"

namespace ember::oci {

absl::Status OpenPty(Pty* pty) {
  pty->master.reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  char name[64];
  if (!pty->master.valid() || grantpt(pty->master.get()) != 0 ||
      unlockpt(pty->master.get()) != 0 || ptsname_r(pty->master.get(), name, sizeof(name)) != 0) {
    return ErrnoStatus("open a pseudo-terminal");
  }
  pty->name = name;
  pty->slave.reset(open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!pty->slave.valid()) return ErrnoStatus(absl::StrCat("open ", name));
  termios t;
  if (tcgetattr(pty->slave.get(), &t) != 0) return ErrnoStatus("tcgetattr");
  cfmakeraw(&t);
  if (tcsetattr(pty->slave.get(), TCSANOW, &t) != 0) return ErrnoStatus("tcsetattr");
  return absl::OkStatus();
}

absl::Status SendConsole(const std::string& path, int fd, const std::string& name) {
  agent::Fd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("console socket path too long: " + path);
  }
  memcpy(addr.sun_path, path.data(), path.size());
  if (!sock.valid() || connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("connect to the console socket ", path));
  }
  iovec iov{const_cast<char*>(name.data()), name.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (sendmsg(sock.get(), &msg, MSG_NOSIGNAL) < 0) return ErrnoStatus("send the console");
  return absl::OkStatus();
}

void TakeTerminal(int slave) { ioctl(slave, TIOCSCTTY, 0); }

}  // namespace ember::oci
