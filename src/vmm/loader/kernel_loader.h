// Copies a guest kernel into guest memory. Two formats, told apart by their
// magic: an ELF vmlinux (entered through its PVH note when it has one, else
// through the 64-bit boot protocol) and a bzImage (64-bit entry).
//
// Images are untrusted input: every offset and size is checked against the
// file and every destination against guest memory, with a message saying
// what is wrong.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <span>

#include "absl/status/statusor.h"
#include "src/vmm/arch/x86_64/regs.h"
#include "src/vmm/guest_memory.h"

namespace ember {

struct LoadedKernel {
  uint64_t entry = 0;
  x86_64::BootProtocol protocol = x86_64::BootProtocol::kLinux64;
  // A bzImage's setup header, for the zero page.
  std::optional<setup_header> header;
  // First guest address above everything the kernel will occupy.
  uint64_t end = 0;
};

absl::StatusOr<LoadedKernel> LoadElfKernel(const GuestMemory& mem,
                                           std::span<const uint8_t> image);
absl::StatusOr<LoadedKernel> LoadBzImage(const GuestMemory& mem, std::span<const uint8_t> image);
// Picks the loader by magic; `name` (the path) goes into error messages.
absl::StatusOr<LoadedKernel> LoadKernel(const GuestMemory& mem, std::span<const uint8_t> image,
                                        absl::string_view name);

}  // namespace ember
