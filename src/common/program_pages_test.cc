#include "src/common/program_pages.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "src/common/unique_fd.h"

namespace ember {
namespace {

constexpr uintptr_t kPage = 4096;
constexpr uint64_t kPresent = 1ull << 63;
constexpr uint64_t kFileOrShared = 1ull << 61;

uint64_t PagemapEntry(int fd, uintptr_t page) {
  uint64_t entry = 0;
  EXPECT_EQ(pread(fd, &entry, sizeof(entry), static_cast<off_t>(page / kPage * 8)),
            static_cast<ssize_t>(sizeof(entry)));
  return entry;
}

// Reads one byte of `page`, which holds the binary's own text or data:
// ASan would call a byte between two globals out of bounds.
__attribute__((no_sanitize("address"))) char Touch(uintptr_t page) {
  return *reinterpret_cast<volatile const char*>(page);
}

// One test: the release happens once per process.
TEST(ProgramPagesTest, ReleasesCleanPagesAndKeepsPrivateCopies) {
  std::vector<PageRange> segments = ReadOnlySegments();
  ASSERT_FALSE(segments.empty());
  UniqueFd pagemap(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(pagemap.valid());

  // Every page mapped, then one made a private copy as a debugger's
  // breakpoint would (a forced write of the byte already there).
  size_t pages = 0;
  for (const PageRange& seg : segments) {
    for (uintptr_t p = seg.start; p < seg.end; p += kPage) {
      Touch(p);
      pages++;
    }
  }
  const uintptr_t copied = segments.back().end - kPage;
  {
    UniqueFd mem(open("/proc/self/mem", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(mem.valid());
    char byte = Touch(copied);
    ASSERT_EQ(pwrite(mem.get(), &byte, 1, static_cast<off_t>(copied)), 1);
  }
  ASSERT_EQ(PagemapEntry(pagemap.get(), copied) & (kPresent | kFileOrShared), kPresent);

  PrepareStartupPageRelease();
  ReleaseStartupPages();

  // The private copy is still mapped; most other pages are not (the test's
  // own code and what is mapped around it come back at once).
  EXPECT_EQ(PagemapEntry(pagemap.get(), copied) & (kPresent | kFileOrShared), kPresent);
  size_t present = 0;
  for (const PageRange& seg : segments) {
    for (uintptr_t p = seg.start; p < seg.end; p += kPage) {
      present += (PagemapEntry(pagemap.get(), p) & kPresent) != 0 ? 1 : 0;
    }
  }
  EXPECT_LT(present, pages / 2) << present << " of " << pages << " pages still mapped";
  // Code and read-only data read the same as before.
  EXPECT_EQ(testing::UnitTest::GetInstance()->current_test_info()->name(),
            std::string("ReleasesCleanPagesAndKeepsPrivateCopies"));

  // A second call does nothing.
  for (const PageRange& seg : segments) (void)*reinterpret_cast<volatile const char*>(seg.start);
  ReleaseStartupPages();
  EXPECT_NE(PagemapEntry(pagemap.get(), segments.front().start) & kPresent, 0u);
}

}  // namespace
}  // namespace ember
