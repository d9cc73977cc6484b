#include "src/vmm/boot.h"

#include "absl/strings/str_format.h"
#include "src/common/mapped_file.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/boot_params.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/arch/x86_64/mptable.h"
#include "src/vmm/loader/kernel_loader.h"

namespace ember {
namespace {

// Linux's default initrd_addr_max: older kernels cannot reach higher.
constexpr uint64_t kInitrdLimit = 1ULL << 31;

absl::Status WriteCmdline(const GuestMemory& mem, const std::string& cmdline) {
  if (cmdline.size() + 1 > x86_64::kCmdlineMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kernel command line is %d bytes; the limit is %d", cmdline.size(),
                        x86_64::kCmdlineMaxSize - 1));
  }
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(cmdline.c_str()),
                                 cmdline.size() + 1);
  return mem.Write(x86_64::kCmdlineStart, bytes);
}

}  // namespace

absl::StatusOr<uint64_t> InitrdAddress(const GuestMemory& mem, uint64_t size,
                                       uint64_t kernel_end) {
  const GuestRegion& low = mem.regions().front();
  uint64_t top = std::min(low.guest_addr + low.size, kInitrdLimit);
  uint64_t addr = size <= top ? (top - size) & ~uint64_t{0xfff} : 0;
  if (size > top || addr < kernel_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initrd of %d KiB does not fit in guest memory above the kernel", size >> 10));
  }
  return addr;
}

absl::StatusOr<BootEntry> LoadGuest(const GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count) {
  ASSIGN_OR_RETURN(MappedFile image, MappedFile::Open(boot.kernel_image_path));
  ASSIGN_OR_RETURN(LoadedKernel kernel, LoadKernelFile(mem, image, boot.kernel_image_path));
  RETURN_IF_ERROR(WriteCmdline(mem, cmdline));

  x86_64::BootInfo info;
  info.cmdline_addr = x86_64::kCmdlineStart;
  info.cmdline_size = static_cast<uint32_t>(cmdline.size());
  if (!boot.initrd_path.empty()) {
    ASSIGN_OR_RETURN(MappedFile initrd, MappedFile::Open(boot.initrd_path));
    ASSIGN_OR_RETURN(info.initrd_addr, InitrdAddress(mem, initrd.data().size(), kernel.end));
    info.initrd_size = initrd.data().size();
    ASSIGN_OR_RETURN(std::span<uint8_t> dest, mem.Slice(info.initrd_addr, info.initrd_size));
    RETURN_IF_ERROR(initrd.ReadAt(0, dest));
  }

  std::vector<x86_64::E820Entry> e820 = x86_64::BuildE820(mem);
  if (kernel.protocol == x86_64::BootProtocol::kPvh) {
    RETURN_IF_ERROR(x86_64::WritePvhStartInfo(mem, e820, info));
  } else {
    ASSIGN_OR_RETURN(boot_params zero_page, x86_64::BuildZeroPage(e820, info, kernel.header));
    RETURN_IF_ERROR(mem.WriteObj(x86_64::kZeroPageStart, zero_page));
  }
  RETURN_IF_ERROR(x86_64::WriteBootTables(mem, kernel.protocol));
  RETURN_IF_ERROR(x86_64::WriteMpTable(mem, vcpu_count));
  return BootEntry{kernel.entry, kernel.protocol};
}

}  // namespace ember
