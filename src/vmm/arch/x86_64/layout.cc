#include "src/vmm/arch/x86_64/layout.h"

#include "absl/strings/str_format.h"

namespace ember::x86_64 {

absl::StatusOr<std::vector<MemoryRange>> RamRanges(uint64_t mem_size) {
  if (mem_size == 0 || mem_size % 4096 || mem_size > kMaxMemSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest memory size %#x is not a non-zero multiple of 4 KiB below %d GiB",
                        mem_size, kMaxMemSize >> 30));
  }
  if (mem_size <= kMmioHoleStart) return std::vector<MemoryRange>{{0, mem_size}};
  return std::vector<MemoryRange>{{0, kMmioHoleStart},
                                  {kMmioHoleEnd, mem_size - kMmioHoleStart}};
}

}  // namespace ember::x86_64
