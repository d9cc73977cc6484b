// Milliseconds from the clocks Ember reports its own costs with.
#pragma once

#include <time.h>

namespace ember {

inline double ClockMs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Wall time, comparable across processes on this host.
inline double MonotonicMs() { return ClockMs(CLOCK_MONOTONIC); }
// CPU time of the whole process, every thread included.
inline double ProcessCpuMs() { return ClockMs(CLOCK_PROCESS_CPUTIME_ID); }

}  // namespace ember
