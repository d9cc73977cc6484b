// virtio-blk requests (virtio 1.x, 5.2.6): a readable header, data buffers,
// and a writable status byte, parsed from a descriptor chain the guest
// wrote. Every rule a well-behaved driver follows is checked here.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "src/devices/virtio/queue.h"

namespace ember::virtio::block {

inline constexpr uint32_t kRequestIn = 0;
inline constexpr uint32_t kRequestOut = 1;
inline constexpr uint32_t kRequestFlush = 4;
inline constexpr uint32_t kRequestGetId = 8;

inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoError = 1;
inline constexpr uint8_t kStatusUnsupported = 2;

inline constexpr uint64_t kSectorSize = 512;

// The readable header that starts every request (virtio_blk_req).
struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);
inline constexpr uint32_t kIdBytes = 20;

struct Request {
  uint32_t type = 0;
  uint64_t sector = 0;
  std::vector<Descriptor> data;
  uint64_t data_len = 0;
  // Where the status byte goes; set whenever the chain ends in a writable
  // descriptor, even if the rest is malformed, so the guest hears back.
  std::optional<uint64_t> status_addr;
  // Why the request is refused, if it is.
  absl::Status error;
};

// Parses `chain` for a disk of `capacity_sectors`. Reads and writes must lie
// inside the disk; out-of-range or malformed requests come back with
// `error` set (the device answers them with an I/O error).
Request ParseRequest(const GuestMemory& mem, const DescriptorChain& chain,
                     uint64_t capacity_sectors);

}  // namespace ember::virtio::block
