#include "src/vmm/boot.h"

#include <time.h>

#include <algorithm>

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

// Whether `before` and `after` (one file's stamps around reading it) show
// it unchanged, and last changed long enough ago that a later write gets a
// new mtime: file systems stamp with a clock that ticks every few ms.
bool Settled(const FileStamp& before, const FileStamp& after) {
  constexpr int64_t kTickNs = 20'000'000;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t now_ns = now.tv_sec * 1'000'000'000LL + now.tv_nsec;
  return before == after && now_ns - std::max(after.mtime_ns, after.ctime_ns) > kTickNs;
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

absl::StatusOr<LoadedImages> LoadImages(const GuestMemory& mem, const BootSourceConfig& boot) {
  LoadedImages images;
  ASSIGN_OR_RETURN(MappedFile image, MappedFile::Open(boot.kernel_image_path));
  ASSIGN_OR_RETURN(images.kernel_stamp, image.Stamp());
  ASSIGN_OR_RETURN(images.kernel, LoadKernelFile(mem, image, boot.kernel_image_path));
  ASSIGN_OR_RETURN(FileStamp after, image.Stamp());
  images.stable = Settled(images.kernel_stamp, after);
  if (boot.initrd_path.empty()) return images;
  ASSIGN_OR_RETURN(MappedFile initrd, MappedFile::Open(boot.initrd_path));
  ASSIGN_OR_RETURN(images.initrd_stamp, initrd.Stamp());
  images.initrd_size = initrd.data().size();
  ASSIGN_OR_RETURN(images.initrd_addr, InitrdAddress(mem, images.initrd_size, images.kernel.end));
  ASSIGN_OR_RETURN(std::span<uint8_t> dest, mem.Slice(images.initrd_addr, images.initrd_size));
  PrefaultForCopy(dest);
  RETURN_IF_ERROR(initrd.ReadAt(0, dest));
  ASSIGN_OR_RETURN(after, initrd.Stamp());
  images.stable = images.stable && Settled(images.initrd_stamp, after);
  return images;
}

absl::StatusOr<BootEntry> WriteBootInfo(const GuestMemory& mem, const LoadedImages& images,
                                        const std::string& cmdline, uint32_t vcpu_count) {
  RETURN_IF_ERROR(WriteCmdline(mem, cmdline));
  x86_64::BootInfo info;
  info.cmdline_addr = x86_64::kCmdlineStart;
  info.cmdline_size = static_cast<uint32_t>(cmdline.size());
  info.initrd_addr = images.initrd_addr;
  info.initrd_size = images.initrd_size;
  const LoadedKernel& kernel = images.kernel;
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

absl::StatusOr<BootEntry> LoadGuest(const GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count) {
  ASSIGN_OR_RETURN(LoadedImages images, LoadImages(mem, boot));
  return WriteBootInfo(mem, images, cmdline, vcpu_count);
}

}  // namespace ember
