// Where the agent listens: "vsock:PORT" in the guest (any CID), or
// "unix:PATH" so that host-side tests can talk to it without a VM.
#pragma once

#include <cstdint>
#include <string>

#include "src/agent/fd.h"

namespace ember::agent {

struct ListenAddress {
  enum class Kind { kVsock, kUnix } kind = Kind::kVsock;
  uint32_t port = 0;  // kVsock
  std::string path;   // kUnix
};

// Parses "vsock:PORT" or "unix:PATH"; false with *error otherwise.
bool ParseListenAddress(const std::string& text, ListenAddress* address, std::string* error);

// A listening, non-blocking, close-on-exec stream socket. A stale socket
// file at a unix PATH is replaced. On failure returns an invalid Fd with
// *error (for vsock, typically: the kernel has no vsock transport yet).
Fd OpenListener(const ListenAddress& address, std::string* error);

}  // namespace ember::agent
