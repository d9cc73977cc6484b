#include "src/devices/virtio/vsock/host_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"

namespace ember::virtio::vsock {
namespace {

bool MakeAddress(const std::string& path, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  // sun_path needs room for the terminating NUL.
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) return false;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::StatusOr<UnixListener> ListenUnix(const std::string& path) {
  sockaddr_un addr;
  if (!MakeAddress(path, &addr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vsock uds_path '", path, "' must be 1 to ", sizeof(addr.sun_path) - 1, " bytes long"));
  }
  UnixListener l;
  l.fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!l.fd.valid()) return ErrnoStatus("vsock: socket(AF_UNIX)");
  if (bind(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    if (err == EADDRINUSE) {
      return absl::AlreadyExistsError(absl::StrCat(
          "vsock uds_path ", path, " already exists; remove it or choose another path"));
    }
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("vsock uds_path ", path, ": directory ",
                                              DirectoryOf(path), " does not exist"));
    }
    return ErrnoStatus(absl::StrCat("vsock: bind ", path), err);
  }
  struct stat st;
  // The file now is ours: whatever fails from here removes it.
  if (stat(path.c_str(), &st) != 0 || listen(l.fd.get(), SOMAXCONN) != 0) {
    int err = errno;
    unlink(path.c_str());
    return ErrnoStatus(absl::StrCat("vsock: listen on ", path), err);
  }
  l.dev = st.st_dev;
  l.ino = st.st_ino;
  return l;
}

void UnlinkIfOurs(const std::string& path, const UnixListener& listener) {
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == listener.dev &&
      st.st_ino == listener.ino) {
    unlink(path.c_str());
  }
}

int ConnectUnix(const std::string& path) {
  sockaddr_un addr;
  if (!MakeAddress(path, &addr)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

std::optional<uint32_t> ParseConnectLine(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  constexpr absl::string_view kVerb = "connect";
  if (line.size() <= kVerb.size() || !absl::EqualsIgnoreCase(line.substr(0, kVerb.size()), kVerb) ||
      !absl::ascii_isspace(static_cast<unsigned char>(line[kVerb.size()]))) {
    return std::nullopt;
  }
  absl::string_view port = absl::StripAsciiWhitespace(line.substr(kVerb.size()));
  uint32_t value;
  // Digits only: SimpleAtoi would take a sign.
  for (char c : port) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  if (port.empty() || !absl::SimpleAtoi(port, &value)) return std::nullopt;
  return value;
}

}  // namespace ember::virtio::vsock
