#include "src/common/program_pages.h"

#include <fcntl.h>
#include <link.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "src/common/log.h"

namespace ember {
namespace {

constexpr uintptr_t kPage = 4096;
// /proc/self/pagemap: one u64 per page (Documentation/admin-guide/mm/pagemap.rst).
constexpr uint64_t kPresent = 1ull << 63;
constexpr uint64_t kFileOrShared = 1ull << 61;

// Set by PrepareStartupPageRelease before any other thread starts;
// read-only after, but for `released`.
struct StartupPages {
  std::vector<PageRange> segments;  // ReadOnlySegments()
  uintptr_t lo = 0, hi = 0;         // the pages `entries` describes
  int pagemap_fd = -1;              // positioned at lo's entry; -1 without /proc
  std::vector<uint64_t> entries;
  std::atomic<bool> released{false};
};
StartupPages* g_pages = nullptr;

// The executable's own segments: the first object dl_iterate_phdr names.
int FirstObject(dl_phdr_info* info, size_t, void* data) {
  auto* segments = static_cast<std::vector<PageRange>*>(data);
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & PF_W) != 0) continue;
    uintptr_t start = (info->dlpi_addr + ph.p_vaddr + kPage - 1) & ~(kPage - 1);
    uintptr_t end = (info->dlpi_addr + ph.p_vaddr + ph.p_memsz) & ~(kPage - 1);
    if (start < end) segments->push_back({start, end});
  }
  return 1;
}

// Keeps a page that is present and not the file's: a private copy.
bool Keep(uint64_t entry) { return (entry & kPresent) != 0 && (entry & kFileOrShared) == 0; }

void Unmap(uintptr_t start, uintptr_t end) {
  if (start < end) madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

}  // namespace

std::vector<PageRange> ReadOnlySegments() {
  std::vector<PageRange> segments;
  dl_iterate_phdr(FirstObject, &segments);
  std::sort(segments.begin(), segments.end(),
            [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
  return segments;
}

void PrepareStartupPageRelease() {
  if (g_pages != nullptr) return;
  std::vector<PageRange> segments = ReadOnlySegments();
  if (segments.empty()) return;
  auto* pages = new StartupPages;  // lives as long as the process
  pages->segments = std::move(segments);
  pages->lo = pages->segments.front().start;
  pages->hi = pages->segments.back().end;
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd >= 0 && lseek(fd, static_cast<off_t>(pages->lo / kPage * 8), SEEK_SET) >= 0) {
    pages->pagemap_fd = fd;
    pages->entries.resize((pages->hi - pages->lo) / kPage);
  } else if (fd >= 0) {
    close(fd);
  }
  g_pages = pages;
}

void ReleaseStartupPages() {
  StartupPages* pages = g_pages;
  if (pages == nullptr || pages->released.exchange(true)) return;
  bool checked = false;
  if (pages->pagemap_fd >= 0) {
    // One read from where Prepare left the file: the calling thread's
    // filter may allow neither lseek nor pread.
    const size_t bytes = pages->entries.size() * sizeof(uint64_t);
    ssize_t n = read(pages->pagemap_fd, pages->entries.data(), bytes);
    if (n != static_cast<ssize_t>(bytes)) {
      LOG_WARN("start-up pages kept: /proc/self/pagemap gave %d of %d bytes", n, bytes);
      return;
    }
    checked = true;
  }
  uint64_t kept = 0, mapped = 0;
  for (const PageRange& seg : pages->segments) {
    uintptr_t run = seg.start;  // the first page of the run to release
    for (uintptr_t page = seg.start; page < seg.end; page += kPage) {
      uint64_t entry = checked ? pages->entries[(page - pages->lo) / kPage] : 0;
      if (!Keep(entry)) {
        mapped += (entry & kPresent) != 0 ? 1 : 0;
        continue;
      }
      kept++;
      Unmap(run, page);
      run = page + kPage;
    }
    Unmap(run, seg.end);
  }
  // What start-up allocated and freed: the free pages inside the heap go
  // back too (madvise(MADV_DONTNEED) and brk, one arena: main.cc).
  malloc_trim(0);
  if (checked) {
    LOG_DEBUG("start-up pages released: %d KiB of code and read-only data (%d private pages kept)",
              mapped * kPage / 1024, kept);
  } else {
    LOG_DEBUG("start-up pages released (no /proc/self/pagemap: private copies not kept)");
  }
}

}  // namespace ember
