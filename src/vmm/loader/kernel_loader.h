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
#include <vector>

#include "absl/status/statusor.h"
#include "src/vmm/arch/x86_64/regs.h"
#include "src/vstate/guest_memory.h"

namespace ember {

// File bytes [file_offset, +size) belong at guest_addr; the segment takes
// mem_size bytes there (the kernel zeroes the rest itself). Checked against
// the file and guest memory when parsed.
struct KernelSegment {
  uint64_t file_offset;
  uint64_t guest_addr;
  uint64_t size;
  uint64_t mem_size;
};

struct LoadedKernel {
  uint64_t entry = 0;
  x86_64::BootProtocol protocol = x86_64::BootProtocol::kLinux64;
  // A bzImage's setup header, for the zero page.
  std::optional<setup_header> header;
  // First guest address above everything the kernel will occupy.
  uint64_t end = 0;
  std::vector<KernelSegment> segments;
};

// Parse and check an image; they copy nothing.
absl::StatusOr<LoadedKernel> ParseElfKernel(const GuestMemory& mem,
                                            std::span<const uint8_t> image);
absl::StatusOr<LoadedKernel> ParseBzImage(const GuestMemory& mem, std::span<const uint8_t> image);
// Picks the parser by magic; `name` (the path) goes into error messages.
absl::StatusOr<LoadedKernel> ParseKernel(const GuestMemory& mem, std::span<const uint8_t> image,
                                         absl::string_view name);

// Parses an image in memory and copies its segments into guest memory.
absl::StatusOr<LoadedKernel> LoadKernel(const GuestMemory& mem, std::span<const uint8_t> image,
                                        absl::string_view name);

// Huge pages for the whole 2 MiB blocks inside `range`, fresh guest memory
// about to be filled in one go. Best effort, as is PrefaultForCopy.
void AdviseHugePages(std::span<uint8_t> range);

// The same for the guest memory that runs of adjoining kernel segments take
// together: the kernel touches all of it (its .bss too), while the gaps
// between runs stay in 4 KiB pages, so an idle VM's RSS does not grow.
void AdviseKernelHugePages(const GuestMemory& mem, const LoadedKernel& kernel);

// Allocates every page of `dest` in one call (a 10 MB vmlinux copied in
// 1.5 ms instead of 5-7 ms of 4 KiB faults on this project's hosts). Best
// effort: an older host kernel just faults.
void PrefaultForCopy(std::span<uint8_t> dest);

}  // namespace ember
