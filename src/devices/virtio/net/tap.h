// A TAP device opened for virtio-net: non-blocking, no packet info, with
// the 12-byte virtio-net header in front of every frame.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember::virtio::net {

class Tap {
 public:
  // Attaches to the TAP called `name` (creating it if it does not exist and
  // the caller may), in the calling thread's network namespace.
  static absl::StatusOr<Tap> Open(const std::string& name);
  // Another descriptor of the same attachment (a device's, while the
  // configuration keeps its own).
  absl::StatusOr<Tap> Duplicate() const;
  // TUN_F_* flags: which offloads the guest can take in received frames.
  absl::Status SetOffload(unsigned flags) const;

  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }

 private:
  Tap(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  UniqueFd fd_;
  std::string name_;
};

}  // namespace ember::virtio::net
