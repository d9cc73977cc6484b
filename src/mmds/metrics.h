// Firecracker's MMDS metrics (its logger/metrics.rs, MmdsMetrics), same
// names. One struct for every interface that reaches MMDS: the caller owns
// it and hands each NetworkStack a pointer.
#pragma once

#include <cstdint>

namespace ember::mmds {

struct MmdsMetrics {
  uint64_t rx_accepted = 0;          // frames Detour took
  uint64_t rx_accepted_err = 0;      // taken frames that were malformed or refused
  uint64_t rx_accepted_unusual = 0;  // odd but legal: non-TCP to MMDS, dup ACKs, out of order
  uint64_t rx_bad_eth = 0;           // too short to be an Ethernet frame
  uint64_t rx_invalid_token = 0;     // GET requests with an invalid token
  uint64_t rx_no_token = 0;          // GET requests without a token
  uint64_t rx_count = 0;             // TCP segments handled
  uint64_t tx_bytes = 0;             // bytes of the frames given to the guest
  uint64_t tx_count = 0;             // frames written by WriteNextFrame
  uint64_t tx_errors = 0;            // a frame did not fit the buffer offered
  uint64_t tx_frames = 0;            // frames given to the guest
  uint64_t connections_created = 0;
  uint64_t connections_destroyed = 0;
};

}  // namespace ember::mmds
