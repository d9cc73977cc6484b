#include "src/oci/api_client.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "src/agent/fd.h"
#include "src/common/errno_status.h"

namespace ember::oci {
namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

}  // namespace

absl::StatusOr<int> ApiRequest(const std::string& socket_path, const std::string& method,
                               const std::string& path, const std::string& body,
                               std::string* reply, double timeout_s) {
  agent::Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("API socket path too long: " + socket_path);
  }
  memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  if (!fd.valid() || connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus("connect to " + socket_path);
  }
  std::string request = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: localhost\r\n");
  if (!body.empty()) {
    absl::StrAppend(&request, "Content-Type: application/json\r\nContent-Length: ", body.size(),
                    "\r\n");
  }
  absl::StrAppend(&request, "\r\n", body);
  for (size_t done = 0; done < request.size();) {
    ssize_t n = send(fd.get(), request.data() + done, request.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return ErrnoStatus("send to " + socket_path);
    done += n;
  }
  // The answer: headers, then Content-Length bytes.
  std::string in;
  double deadline = Now() + timeout_s;
  size_t header_end = std::string::npos, length = 0;
  while (true) {
    if (header_end == std::string::npos && (header_end = in.find("\r\n\r\n")) != std::string::npos) {
      size_t at = in.find("Content-Length:");
      if (at != std::string::npos && at < header_end) {
        size_t eol = in.find("\r\n", at);
        std::string value(in.substr(at + 15, eol - at - 15));
        value.erase(0, value.find_first_not_of(' '));
        if (!absl::SimpleAtoi(value, &length)) length = 0;
      }
    }
    if (header_end != std::string::npos && in.size() >= header_end + 4 + length) break;
    pollfd p{fd.get(), POLLIN, 0};
    int left = static_cast<int>((deadline - Now()) * 1000);
    if (left <= 0 || poll(&p, 1, left) <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(method, " ", path, ": no answer"));
    }
    char buf[4096];
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n <= 0) break;
    in.append(buf, n);
  }
  int code = 0;
  if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0 ||
      !absl::SimpleAtoi(in.substr(9, 3), &code)) {
    return absl::InternalError(absl::StrCat(method, " ", path, ": bad answer \"",
                                            in.substr(0, 64), "\""));
  }
  if (reply && header_end != std::string::npos) *reply = in.substr(header_end + 4);
  return code;
}

absl::Status WaitForApi(const std::string& socket, double timeout_s) {
  double deadline = Now() + timeout_s;
  while (true) {
    auto code = ApiRequest(socket, "GET", "/", "", nullptr, 5);
    if (code.ok()) return absl::OkStatus();
    if (Now() > deadline) return code.status();
    usleep(20 * 1000);
  }
}

}  // namespace ember::oci
