#include "src/devices/virtio/net/tap.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"

namespace ember::virtio::net {

absl::StatusOr<Tap> Tap::Open(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(absl::StrCat("TAP name '", name, "' must be 1-15 characters"));
  }
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open /dev/net/tun");
  ifreq ifr = {};
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd.get(), TUNSETIFF, &ifr) < 0) {
    int err = errno;
    const char* hint = err == EBUSY    ? ": another process or interface holds it"
                       : err == EINVAL ? ": it is multi-queue, or not a TAP"
                       : err == EPERM  ? ": this user may not attach to it"
                                       : "";
    // Firecracker's words, which its clients match.
    return absl::Status(ErrnoStatus("TUNSETIFF", err).code(),
                        absl::StrCat("Open tap device failed: Error while creating ifreq "
                                     "structure: ",
                                     strerror(err), " (os error ", err,
                                     "). Invalid TUN/TAP Backend provided by ", name, hint));
  }
  int header = 12;  // struct virtio_net_hdr_v1
  if (ioctl(fd.get(), TUNSETVNETHDRSZ, &header) < 0) {
    return ErrnoStatus(absl::StrCat("TAP ", name, ": TUNSETVNETHDRSZ"));
  }
  return Tap(std::move(fd), name);
}

absl::StatusOr<Tap> Tap::Duplicate() const {
  UniqueFd fd(fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("TAP ", name_, ": dup"));
  return Tap(std::move(fd), name_);
}

absl::Status Tap::SetOffload(unsigned flags) const {
  if (ioctl(fd_.get(), TUNSETOFFLOAD, flags) < 0) {
    return ErrnoStatus(absl::StrCat("TAP ", name_, ": TUNSETOFFLOAD"));
  }
  return absl::OkStatus();
}

}  // namespace ember::virtio::net
