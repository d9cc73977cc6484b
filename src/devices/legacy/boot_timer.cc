#include "src/devices/legacy/boot_timer.h"

#include <algorithm>

#include "src/common/clock.h"
#include "src/common/log.h"

namespace ember {

void BootTimer::Read(uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

void BootTimer::Write(uint64_t offset, std::span<const uint8_t> data) {
  // Only a one-byte write of the magic value at offset 0, as Firecracker.
  if (offset != 0 || data.size() != 1 || data[0] != kMagicBootComplete) return;
  double ms = MonotonicMs() - start_ms_.load();
  double expected = -1;
  if (!boot_ms_.compare_exchange_strong(expected, ms)) return;  // reported already
  LOG_INFO("guest boot complete (boot timer): %.3f ms since InstanceStart, %.3f ms process CPU",
           ms, ProcessCpuMs());
}

}  // namespace ember
