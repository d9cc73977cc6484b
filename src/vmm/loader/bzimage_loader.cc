// bzImage (Linux/x86 boot protocol 2.12+): the protected-mode part is loaded
// at 1 MiB and entered at its 64-bit entry, 0x200 bytes in.
#include <cstring>

#include "absl/strings/str_format.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/loader/kernel_loader.h"

namespace ember {
namespace {

constexpr uint64_t kSetupHeaderOffset = 0x1f1;
constexpr uint32_t kHdrMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kMinVersion = 0x020c;    // first with xloadflags
constexpr uint16_t kXlfKernel64 = 1 << 0;
constexpr uint64_t kLoadAddr = x86_64::kHighMemStart;
constexpr uint64_t kEntry64Offset = 0x200;
// The decompressed kernel of a non-relocatable bzImage lands here.
constexpr uint64_t kLoadPhysicalAddr = 0x1000000;

}  // namespace

absl::StatusOr<LoadedKernel> ParseBzImage(const GuestMemory& mem,
                                          std::span<const uint8_t> image) {
  if (image.size() < kSetupHeaderOffset + sizeof(setup_header)) {
    return absl::InvalidArgumentError("bzImage is truncated: no complete setup header");
  }
  setup_header hdr;
  std::memcpy(&hdr, image.data() + kSetupHeaderOffset, sizeof(hdr));
  if (hdr.header != kHdrMagic) return absl::InvalidArgumentError("bzImage: no HdrS magic");
  if (hdr.version < kMinVersion || !(hdr.xloadflags & kXlfKernel64)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage: boot protocol %x.%02x has no 64-bit entry (need 2.12 or later)",
        hdr.version >> 8, hdr.version & 0xff));
  }
  uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  uint64_t kernel_offset = (setup_sects + 1) * 512;
  if (kernel_offset >= image.size()) {
    return absl::InvalidArgumentError("bzImage is truncated: no protected-mode kernel");
  }
  const uint64_t payload_size = image.size() - kernel_offset;

  // Loaded at 1 MiB, the kernel decompresses itself to 16 MiB or its
  // preferred address, whichever is higher, and needs init_size bytes there.
  uint64_t run_addr = std::max(uint64_t{hdr.pref_address}, kLoadPhysicalAddr);
  uint64_t end = std::max(kLoadAddr + payload_size, run_addr + uint64_t{hdr.init_size});
  if (!mem.Contains(kLoadAddr, end - kLoadAddr)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage needs guest memory up to %d MiB", (end + (1 << 20) - 1) >> 20));
  }
  LoadedKernel kernel;
  kernel.entry = kLoadAddr + kEntry64Offset;
  kernel.protocol = x86_64::BootProtocol::kLinux64;
  kernel.header = hdr;
  kernel.end = end;
  kernel.segments.push_back({kernel_offset, kLoadAddr, payload_size, payload_size});
  return kernel;
}

}  // namespace ember
