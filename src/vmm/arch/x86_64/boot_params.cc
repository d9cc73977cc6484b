#include "src/vmm/arch/x86_64/boot_params.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/layout.h"

namespace ember::x86_64 {
namespace {

constexpr uint32_t kHdrMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint16_t kMinProtocol = 0x0206;
constexpr uint8_t kLoaderUndefined = 0xff;
constexpr uint8_t kLoadedHigh = 0x01;  // loadflags: kernel at 1 MiB
constexpr uint8_t kCanUseHeap = 0x80;
constexpr uint64_t kPvhMemmapMaxEntries =
    (kZeroPageStart - kPvhMemmapStart) / sizeof(HvmMemmapEntry);

}  // namespace

std::vector<E820Entry> BuildE820(const GuestMemory& mem) {
  std::vector<E820Entry> e820;
  e820.push_back({0, kEbdaStart, kE820Ram});
  for (const GuestRegion& r : mem.regions()) {
    uint64_t start = std::max(r.guest_addr, kHighMemStart);
    uint64_t end = r.guest_addr + r.size;
    if (end > start) e820.push_back({start, end - start, kE820Ram});
  }
  return e820;
}

absl::StatusOr<boot_params> BuildZeroPage(const std::vector<E820Entry>& e820,
                                          const BootInfo& info,
                                          const std::optional<setup_header>& image_header) {
  if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d e820 entries exceed the zero page's %d", e820.size(),
                        E820_MAX_ENTRIES_ZEROPAGE));
  }
  boot_params params;
  std::memset(&params, 0, sizeof(params));
  if (image_header) {
    params.hdr = *image_header;
  } else {
    params.hdr.header = kHdrMagic;
    params.hdr.version = kMinProtocol;
    params.hdr.boot_flag = kBootFlag;
    params.hdr.kernel_alignment = 0x1000000;
  }
  params.hdr.type_of_loader = kLoaderUndefined;
  params.hdr.loadflags |= kLoadedHigh | kCanUseHeap;
  params.hdr.heap_end_ptr = 0xfe00;  // real-mode heap end; unused by 64-bit entry
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(info.cmdline_addr);
  params.hdr.cmdline_size = info.cmdline_size;
  params.hdr.ramdisk_image = static_cast<uint32_t>(info.initrd_addr);
  params.hdr.ramdisk_size = static_cast<uint32_t>(info.initrd_size);
  params.ext_ramdisk_image = static_cast<uint32_t>(info.initrd_addr >> 32);
  params.ext_ramdisk_size = static_cast<uint32_t>(info.initrd_size >> 32);
  params.ext_cmd_line_ptr = static_cast<uint32_t>(info.cmdline_addr >> 32);
  params.e820_entries = e820.size();
  for (size_t i = 0; i < e820.size(); i++) {
    params.e820_table[i] = {e820[i].addr, e820[i].size, e820[i].type};
  }
  return params;
}

absl::Status WritePvhStartInfo(const GuestMemory& mem, const std::vector<E820Entry>& e820,
                               const BootInfo& info) {
  if (e820.size() > kPvhMemmapMaxEntries) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d memory map entries exceed the PVH table's %d", e820.size(), kPvhMemmapMaxEntries));
  }
  HvmStartInfo start = {};
  start.magic = kHvmStartMagic;
  start.version = 1;
  start.cmdline_paddr = info.cmdline_addr;
  start.memmap_paddr = kPvhMemmapStart;
  start.memmap_entries = e820.size();
  if (info.initrd_size > 0) {
    HvmModlistEntry initrd = {.paddr = info.initrd_addr, .size = info.initrd_size};
    RETURN_IF_ERROR(mem.WriteObj(kPvhModlistStart, initrd));
    start.nr_modules = 1;
    start.modlist_paddr = kPvhModlistStart;
  }
  for (size_t i = 0; i < e820.size(); i++) {
    HvmMemmapEntry entry = {.addr = e820[i].addr, .size = e820[i].size, .type = e820[i].type};
    RETURN_IF_ERROR(mem.WriteObj(kPvhMemmapStart + i * sizeof(entry), entry));
  }
  return mem.WriteObj(kPvhInfoStart, start);
}

}  // namespace ember::x86_64
