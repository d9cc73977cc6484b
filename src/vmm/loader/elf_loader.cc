// ELF vmlinux: PT_LOAD segments at their physical addresses; the entry is
// the Xen PVH note's when present, else e_entry (startup_64's physical
// address).
#include <elf.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/loader/kernel_loader.h"

namespace ember {
namespace {

constexpr uint32_t kXenElfNotePhys32Entry = 18;
constexpr uint64_t kPage = 4096;

// True if [offset, offset + len) lies inside a file of `size` bytes.
bool InFile(uint64_t offset, uint64_t len, size_t size) {
  return offset <= size && len <= size - offset;
}

uint64_t AlignUp4(uint64_t v) { return (v + 3) & ~uint64_t{3}; }

// Scans one PT_NOTE segment for the PVH entry note.
std::optional<uint64_t> FindPvhEntry(std::span<const uint8_t> notes) {
  uint64_t pos = 0;
  while (pos + sizeof(Elf64_Nhdr) <= notes.size()) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, notes.data() + pos, sizeof(nh));
    uint64_t name_at = pos + sizeof(nh);
    uint64_t desc_at = name_at + AlignUp4(nh.n_namesz);
    uint64_t next = desc_at + AlignUp4(nh.n_descsz);
    if (next > notes.size() || next <= pos) return std::nullopt;
    if (nh.n_type == kXenElfNotePhys32Entry && nh.n_namesz == 4 &&
        std::memcmp(notes.data() + name_at, "Xen", 4) == 0 && nh.n_descsz >= 4) {
      // 4 bytes in 32-bit kernels, 8 (a pointer) in 64-bit ones.
      if (nh.n_descsz >= 8) {
        uint64_t entry;
        std::memcpy(&entry, notes.data() + desc_at, sizeof(entry));
        return entry;
      }
      uint32_t entry;
      std::memcpy(&entry, notes.data() + desc_at, sizeof(entry));
      return entry;
    }
    pos = next;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<LoadedKernel> ParseElfKernel(const GuestMemory& mem,
                                            std::span<const uint8_t> image) {
  if (image.size() < sizeof(Elf64_Ehdr)) {
    return absl::InvalidArgumentError("ELF kernel is truncated: no complete ELF header");
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof(eh));
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return absl::InvalidArgumentError("not an ELF file: bad magic");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
      eh.e_machine != EM_X86_64) {
    return absl::InvalidArgumentError("ELF kernel is not a 64-bit little-endian x86-64 image");
  }
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
      !InFile(eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr), image.size())) {
    return absl::InvalidArgumentError("ELF kernel's program headers are missing or truncated");
  }

  LoadedKernel kernel;
  kernel.entry = eh.e_entry;
  std::optional<uint64_t> pvh_entry;
  bool loaded_any = false;
  for (uint16_t i = 0; i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    std::memcpy(&ph, image.data() + eh.e_phoff + i * sizeof(ph), sizeof(ph));
    if (!InFile(ph.p_offset, ph.p_filesz, image.size())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("ELF segment %d reaches past the end of the file", i));
    }
    std::span<const uint8_t> bytes = image.subspan(ph.p_offset, ph.p_filesz);
    if (ph.p_type == PT_NOTE) {
      if (!pvh_entry) pvh_entry = FindPvhEntry(bytes);
      continue;
    }
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz) {
      return absl::InvalidArgumentError(
          absl::StrFormat("ELF segment %d has more file bytes than memory bytes", i));
    }
    if (ph.p_paddr < x86_64::kHighMemStart) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF segment %d at %#x is below 1 MiB, where the boot tables live", i, ph.p_paddr));
    }
    if (!mem.Contains(ph.p_paddr, ph.p_memsz)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF segment %d [%#x, +%#x) is outside guest memory (too little memory?)", i,
          ph.p_paddr, ph.p_memsz));
    }
    kernel.segments.push_back({ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz});
    kernel.end = std::max(kernel.end, ph.p_paddr + ph.p_memsz);
    loaded_any = true;
  }
  if (!loaded_any) return absl::InvalidArgumentError("ELF kernel has no loadable segment");
  if (pvh_entry) {
    kernel.entry = *pvh_entry;
    kernel.protocol = x86_64::BootProtocol::kPvh;
  }
  if (!mem.Contains(kernel.entry, 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ELF kernel entry %#x is outside guest memory", kernel.entry));
  }
  return kernel;
}

absl::StatusOr<LoadedKernel> ParseKernel(const GuestMemory& mem, std::span<const uint8_t> image,
                                         absl::string_view name) {
  absl::StatusOr<LoadedKernel> kernel;
  if (image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) {
    kernel = ParseElfKernel(mem, image);
  } else if (image.size() >= 0x206 && std::memcmp(image.data() + 0x202, "HdrS", 4) == 0) {
    kernel = ParseBzImage(mem, image);
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is neither an ELF vmlinux nor a bzImage", name));
  }
  if (!kernel.ok()) {
    return absl::Status(kernel.status().code(),
                        absl::StrFormat("kernel %s: %s", name, kernel.status().message()));
  }
  return kernel;
}

absl::StatusOr<LoadedKernel> LoadKernel(const GuestMemory& mem, std::span<const uint8_t> image,
                                        absl::string_view name) {
  ASSIGN_OR_RETURN(LoadedKernel kernel, ParseKernel(mem, image, name));
  for (const KernelSegment& seg : kernel.segments) {
    RETURN_IF_ERROR(mem.Write(seg.guest_addr, image.subspan(seg.file_offset, seg.size)));
  }
  return kernel;
}

void AdviseHugePages(std::span<uint8_t> range) {
  constexpr uintptr_t kHuge = 2 << 20;
  uintptr_t start = reinterpret_cast<uintptr_t>(range.data());
  uintptr_t huge_start = (start + kHuge - 1) & ~(kHuge - 1);
  uintptr_t huge_end = (start + range.size()) & ~(kHuge - 1);
  if (huge_start < huge_end) {
    (void)madvise(reinterpret_cast<void*>(huge_start), huge_end - huge_start, MADV_HUGEPAGE);
  }
}

void AdviseKernelHugePages(const GuestMemory& mem, const LoadedKernel& kernel) {
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [start, end) in guest memory
  for (const KernelSegment& seg : kernel.segments) {
    spans.push_back({seg.guest_addr, seg.guest_addr + std::max(seg.size, seg.mem_size)});
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 0; i < spans.size();) {
    auto [start, end] = spans[i];
    // A run: each segment starts on the page where the last one ended.
    for (i++; i < spans.size() && spans[i].first <= ((end + kPage - 1) & ~(kPage - 1)); i++) {
      end = std::max(end, spans[i].second);
    }
    absl::StatusOr<std::span<uint8_t>> host = mem.HostRange(start, end - start);
    if (host.ok()) AdviseHugePages(*host);
  }
}

void PrefaultForCopy(std::span<uint8_t> dest) {
  uintptr_t start = reinterpret_cast<uintptr_t>(dest.data());
  uintptr_t page_start = start & ~(kPage - 1);
  uintptr_t page_end = (start + dest.size() + kPage - 1) & ~(kPage - 1);
  (void)madvise(reinterpret_cast<void*>(page_start), page_end - page_start, MADV_POPULATE_WRITE);
}

}  // namespace ember
