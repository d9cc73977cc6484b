// Puts everything a directly booted guest needs into guest memory: kernel,
// command line, initrd, boot tables, zero page or PVH start info, MP table.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "src/vmm/arch/x86_64/regs.h"
#include "src/vstate/guest_memory.h"
#include "src/config/vm_config.h"

namespace ember {

struct BootEntry {
  uint64_t entry;
  x86_64::BootProtocol protocol;
};

absl::StatusOr<BootEntry> LoadGuest(const GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count);

// Page-aligned address for an initrd of `size` bytes: as high as possible
// below 2 GiB in the first region, and above `kernel_end`.
absl::StatusOr<uint64_t> InitrdAddress(const GuestMemory& mem, uint64_t size,
                                       uint64_t kernel_end);

}  // namespace ember
