#include "src/vmm/snapshot/uffd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

namespace ember::snapshot {
namespace {

// The syscall where the process may use it; else /dev/userfaultfd (kernels
// from 6.1, and what the jailer puts in the jail).
absl::StatusOr<UniqueFd> NewUserfaultfd() {
  UniqueFd fd(static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (fd.valid()) return fd;
  int syscall_errno = errno;
  UniqueFd dev(open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (dev.valid()) {
    fd.reset(ioctl(dev.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK));
    if (fd.valid()) return fd;
  }
  return ErrnoStatus("userfaultfd (syscall and /dev/userfaultfd)", syscall_errno);
}

}  // namespace

absl::StatusOr<UffdHandover> HandOverToUffdHandler(const GuestMemory& mem,
                                                   const std::string& socket_path) {
  ASSIGN_OR_RETURN(UniqueFd uffd, NewUserfaultfd());
  uffdio_api api = {UFFD_API, 0, 0};
  if (ioctl(uffd.get(), UFFDIO_API, &api) != 0) return ErrnoStatus("UFFDIO_API");
  std::string json = "[";
  uint64_t offset = 0;
  // RAM's regions, then memory hotplug's (the memory file's order).
  std::vector<GuestRegion> regions = mem.regions();
  if (const GuestRegion* hotplug = mem.hotplug_region()) regions.push_back(*hotplug);
  for (const GuestRegion& r : regions) {
    uffdio_register reg = {{reinterpret_cast<uint64_t>(r.host), r.size},
                           UFFDIO_REGISTER_MODE_MISSING, 0};
    if (ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0) return ErrnoStatus("UFFDIO_REGISTER");
    // page_size_kib is Firecracker's older name, in bytes too.
    absl::StrAppend(&json, offset == 0 ? "" : ",",
                    absl::StrFormat("{\"base_host_virt_addr\":%d,\"size\":%d,\"offset\":%d,"
                                    "\"page_size\":%d,\"page_size_kib\":%d}",
                                    reinterpret_cast<uint64_t>(r.host), r.size, offset,
                                    mem.host_page_size(), mem.host_page_size()));
    offset += r.size;
  }
  json += "]";

  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("mem_backend.backend_path ", socket_path,
                                                   " is too long for a Unix socket"));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  // Non-blocking: a handler that never accepts, its backlog full, fails
  // the load (EAGAIN) instead of holding the VMM thread.
  UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!sock.valid()) return ErrnoStatus("socket");
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("connecting to the page-fault handler at ", socket_path));
  }
  iovec iov = {json.data(), json.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  int fd = uffd.get();
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(fd));
  if (sendmsg(sock.get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(json.size())) {
    return ErrnoStatus(absl::StrCat("sending the userfaultfd to ", socket_path));
  }
  return UffdHandover{std::move(uffd), std::move(sock)};
}

}  // namespace ember::snapshot
