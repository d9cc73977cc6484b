// Guest physical layout of an Ember x86-64 microVM.
//
//   0x500   GDT            0x6000  PVH start info, module list, memmap
//   0x7000  zero page      0x8ff0  boot stack top
//   0x9000  PML4, PDPT, PD (identity map of the first 1 GiB)
//   0x20000 command line   0x9fc00 MP table (top 1 KiB of base memory)
//   1 MiB   kernel         ... RAM up to 3 GiB, then the 32-bit MMIO hole,
//   4 GiB   the rest of RAM.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "src/vstate/guest_memory.h"

namespace ember::x86_64 {

inline constexpr uint64_t kGdtStart = 0x500;
inline constexpr uint64_t kIdtStart = 0x520;
inline constexpr uint64_t kPvhInfoStart = 0x6000;
inline constexpr uint64_t kPvhModlistStart = 0x6040;
inline constexpr uint64_t kPvhMemmapStart = 0x6100;
inline constexpr uint64_t kZeroPageStart = 0x7000;
inline constexpr uint64_t kBootStackPointer = 0x8ff0;
inline constexpr uint64_t kPml4Start = 0x9000;
inline constexpr uint64_t kPdptStart = 0xa000;
inline constexpr uint64_t kPdStart = 0xb000;
inline constexpr uint64_t kCmdlineStart = 0x20000;
// Linux x86's COMMAND_LINE_SIZE, terminating NUL included.
inline constexpr uint64_t kCmdlineMaxSize = 2048;
inline constexpr uint64_t kEbdaStart = 0x9fc00;
inline constexpr uint64_t kHighMemStart = 0x100000;

inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kMmioHoleEnd = 0x100000000;
// Virtio-mmio devices sit at the start of the hole.
inline constexpr uint64_t kMmioDevicesStart = kMmioHoleStart;
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;
// KVM needs three pages for the TSS and one for the identity map on Intel;
// both sit in the hole, below the IOAPIC.
inline constexpr uint64_t kKvmTssAddr = 0xfffbd000;
inline constexpr uint64_t kKvmIdentityMapAddr = 0xfffbc000;

// The largest guest this layout describes (RAM above 4 GiB included).
inline constexpr uint64_t kMaxMemSize = 1ULL << 46;

// RAM ranges for `mem_size` bytes: below the hole, then above 4 GiB.
absl::StatusOr<std::vector<MemoryRange>> RamRanges(uint64_t mem_size);

}  // namespace ember::x86_64
