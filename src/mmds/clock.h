// The clock MMDS reads for token expiry and TCP timers: milliseconds on a
// monotonic scale. Injectable so that tests and the fuzzer can step time.
#pragma once

#include <cstdint>
#include <functional>

#include "src/common/clock.h"

namespace ember::mmds {

using Clock = std::function<uint64_t()>;

// CLOCK_MONOTONIC, which the VMM thread's seccomp filter allows (vDSO).
inline Clock MonotonicClock() {
  return [] { return static_cast<uint64_t>(MonotonicMs()); };
}

}  // namespace ember::mmds
