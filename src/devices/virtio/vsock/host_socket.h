// The host side of Firecracker's vsock: Unix stream sockets. Host
// programs connect to uds_path and ask for a guest port with a
// "CONNECT <port>\n" line; a guest's connection to port P goes to a
// listener at "<uds_path>_<P>".
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "src/common/unique_fd.h"

namespace ember::virtio::vsock {

// The longest CONNECT line, newline included (Firecracker reads 32 bytes).
inline constexpr size_t kMaxConnectLine = 32;

// A listening socket bound at a path, and which file it made there (so
// that only that file is ever unlinked).
struct UnixListener {
  UniqueFd fd;
  dev_t dev = 0;
  ino_t ino = 0;
};

// Binds and listens at `path` (non-blocking, close-on-exec). Fails
// AlreadyExists when something is at `path` and NotFound when its
// directory is missing; leaves no file behind when it fails.
absl::StatusOr<UnixListener> ListenUnix(const std::string& path);

// Removes `path` if it still is the socket `listener` made.
void UnlinkIfOurs(const std::string& path, const UnixListener& listener);

// A non-blocking connect to a listener at `path`. Unix sockets connect
// at once or not at all (EAGAIN when its backlog is full), so there is no
// connection in progress to wait for. -1 with errno set on failure.
int ConnectUnix(const std::string& path);

// "CONNECT <port>" (any case, spaces around the port allowed), the
// newline already cut off; nullopt for anything else.
std::optional<uint32_t> ParseConnectLine(absl::string_view line);

}  // namespace ember::virtio::vsock
