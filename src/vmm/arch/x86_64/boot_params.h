// The tables a directly booted kernel reads to learn about its machine: the
// Linux zero page (struct boot_params) with its e820 map, and the PVH
// hvm_start_info with its memory map.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "src/vstate/guest_memory.h"

namespace ember::x86_64 {

inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};

// Where the loader put the command line and initrd.
struct BootInfo {
  uint64_t cmdline_addr = 0;
  uint32_t cmdline_size = 0;  // without the terminating NUL
  uint64_t initrd_addr = 0;
  uint64_t initrd_size = 0;
};

// RAM as the guest should see it: base memory below the MP table, then from
// 1 MiB to the end of each region.
std::vector<E820Entry> BuildE820(const GuestMemory& mem);

// The zero page for the 64-bit boot protocol. `image_header` is the setup
// header of a bzImage (its loader fields are overwritten); a vmlinux has
// none, and gets a header with the magic and version alone.
absl::StatusOr<boot_params> BuildZeroPage(const std::vector<E820Entry>& e820,
                                          const BootInfo& info,
                                          const std::optional<setup_header>& image_header);

// hvm_start_info (x86/HVM direct boot ABI, version 1).
struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;

// Writes start info, module list (the initrd) and memory map at their
// fixed addresses in layout.h.
absl::Status WritePvhStartInfo(const GuestMemory& mem, const std::vector<E820Entry>& e820,
                               const BootInfo& info);

}  // namespace ember::x86_64
