#include "src/devices/virtio/vsock/connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ember::virtio::vsock {

void TxBuf::Push(std::span<const iovec> data, size_t capacity) {
  if (ring_.size() != capacity) {
    // First use (or a new capacity, only in tests): keep what is held.
    std::vector<uint8_t> ring(capacity);
    for (size_t i = 0; i < size_; i++) ring[i] = ring_[(head_ + i) % ring_.size()];
    ring_ = std::move(ring);
    head_ = 0;
  }
  for (const iovec& v : data) {
    const auto* from = static_cast<const uint8_t*>(v.iov_base);
    for (size_t left = v.iov_len; left > 0;) {
      size_t tail = (head_ + size_) % ring_.size();
      // Free bytes run from the tail to the ring's end or to the head.
      size_t n = std::min({left, ring_.size() - tail, ring_.size() - size_});
      if (n == 0) return;  // full: the caller checked it would not be
      std::memcpy(ring_.data() + tail, from, n);
      from += n;
      left -= n;
      size_ += n;
    }
  }
}

ssize_t TxBuf::FlushTo(int fd) {
  if (size_ == 0) return 0;
  iovec iov[2];
  size_t first = std::min(size_, ring_.size() - head_);
  iov[0] = {ring_.data() + head_, first};
  iov[1] = {ring_.data(), size_ - first};
  msghdr msg = {};
  msg.msg_iov = iov;
  msg.msg_iovlen = size_ > first ? 2 : 1;
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    head_ = (head_ + n) % ring_.size();
    size_ -= n;
    if (size_ == 0) head_ = 0;
  }
  return n;
}

}  // namespace ember::virtio::vsock
