#include "src/agent/listener.h"

#include <errno.h>
#include <linux/vm_sockets.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdlib>

namespace ember::agent {

bool ParseListenAddress(const std::string& text, ListenAddress* address, std::string* error) {
  if (text.rfind("vsock:", 0) == 0) {
    std::string port = text.substr(6);
    char* end = nullptr;
    unsigned long value = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || value > 0xffffffffUL) {
      *error = "bad vsock port in " + text;
      return false;
    }
    address->kind = ListenAddress::Kind::kVsock;
    address->port = static_cast<uint32_t>(value);
    return true;
  }
  if (text.rfind("unix:", 0) == 0 && text.size() > 5) {
    address->kind = ListenAddress::Kind::kUnix;
    address->path = text.substr(5);
    if (address->path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      *error = "unix socket path too long: " + address->path;
      return false;
    }
    return true;
  }
  *error = "expected vsock:PORT or unix:PATH, got " + text;
  return false;
}

Fd OpenListener(const ListenAddress& address, std::string* error) {
  bool vsock = address.kind == ListenAddress::Kind::kVsock;
  Fd fd(socket(vsock ? AF_VSOCK : AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    *error = std::string(vsock ? "vsock" : "unix") + " socket: " + strerror(errno);
    return Fd();
  }
  int rc;
  if (vsock) {
    sockaddr_vm addr{};
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = address.port;
    rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    struct stat st;
    if (lstat(address.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      unlink(address.path.c_str());
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, address.path.c_str(), address.path.size());
    rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  if (rc != 0 || listen(fd.get(), 64) != 0) {
    *error = std::string("bind/listen: ") + strerror(errno);
    return Fd();
  }
  return fd;
}

}  // namespace ember::agent
