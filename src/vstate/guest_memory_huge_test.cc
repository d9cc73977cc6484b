// machine-config.huge_pages: guest memory from transparent huge pages and
// from the host's hugetlbfs pool, and the balloon's discards on it.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "src/common/testing/huge_page_pool.h"
#include "src/common/testing/smaps.h"
#include "src/vstate/guest_memory.h"

namespace ember {
namespace {

using testing::HugePagePool;
using testing::SmapsField;
using testing::VmFlags;

constexpr uint64_t kMiB = 1 << 20;

bool KernelAtLeast(int want_major, int want_minor) {
  struct utsname u;
  int major = 0, minor = 0;
  if (uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > want_major || (major == want_major && minor >= want_minor);
}

bool AllBytes(const GuestMemory& mem, uint64_t addr, uint64_t len, uint8_t value) {
  std::vector<uint8_t> got(len);
  if (!mem.Read(addr, got).ok()) return false;
  for (uint8_t b : got) {
    if (b != value) return false;
  }
  return true;
}

void Fill(const GuestMemory& mem, uint64_t addr, uint64_t len, uint8_t value) {
  std::vector<uint8_t> bytes(len, value);
  ASSERT_TRUE(mem.Write(addr, bytes).ok());
}

TEST(HugePagesTest, TransparentAdvisesEveryRegion) {
  auto mem = GuestMemory::Create({{0, 4 * kMiB}, {8 * kMiB, 2 * kMiB}}, false,
                                 HugePages::kTransparent);
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ(mem->huge_pages(), HugePages::kTransparent);
  EXPECT_EQ(mem->host_page_size(), 4096u);
  for (const GuestRegion& r : mem->regions()) {
    EXPECT_NE(VmFlags(r.host).find(" hg "), std::string::npos) << VmFlags(r.host);
  }
  auto plain = GuestMemory::Create({{0, 4 * kMiB}});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(VmFlags(plain->regions()[0].host).find(" hg "), std::string::npos);
}

TEST(HugePagesTest, HugetlbfsMemoryIsMadeOfTwoMiBPages) {
  HugePagePool pool(3);
  if (!pool.unavailable().empty()) GTEST_SKIP() << pool.unavailable();
  uint64_t reserved = HugePagePool::Meminfo("HugePages_Rsvd");
  auto mem = GuestMemory::Create({{0, 6 * kMiB}}, false, HugePages::k2M);
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ(mem->host_page_size(), 2 * kMiB);
  const uint8_t* host = mem->regions()[0].host;
  EXPECT_EQ(SmapsField(host, "KernelPageSize:"), "2048 kB");
  EXPECT_NE(VmFlags(host).find(" ht "), std::string::npos) << VmFlags(host);
  EXPECT_NE(VmFlags(host).find(" dc "), std::string::npos) << "no fork copies guest memory";
  EXPECT_EQ(reinterpret_cast<uintptr_t>(host) % (2 * kMiB), 0u);
  // The whole mapping is reserved from the pool at once, before any touch.
  EXPECT_EQ(HugePagePool::Meminfo("HugePages_Rsvd"), reserved + 3);
  Fill(*mem, 0, 6 * kMiB, 0xab);
  EXPECT_TRUE(AllBytes(*mem, 6 * kMiB - 8, 8, 0xab));
  EXPECT_EQ(HugePagePool::Meminfo("HugePages_Rsvd"), reserved) << "all three now in use";
}

// The balloon frees 4 KiB guest pages: on hugetlbfs memory only the huge
// pages wholly inside a range go back, and the rest keeps its bytes.
TEST(HugePagesTest, DiscardGivesBackOnlyWholeHugePages) {
  HugePagePool pool(3);
  if (!pool.unavailable().empty()) GTEST_SKIP() << pool.unavailable();
  auto mem = GuestMemory::Create({{0, 6 * kMiB}}, false, HugePages::k2M);
  ASSERT_TRUE(mem.ok()) << mem.status();
  Fill(*mem, 0, 6 * kMiB, 0xab);
  ASSERT_TRUE(mem->Discard(1 * kMiB, 4 * kMiB));  // [1, 5) MiB: the page at 2 MiB only
  EXPECT_TRUE(AllBytes(*mem, 0, 2 * kMiB, 0xab));
  // Given back only where Linux keeps the reservation (6.9 on).
  EXPECT_TRUE(AllBytes(*mem, 2 * kMiB, 2 * kMiB, KernelAtLeast(6, 9) ? 0 : 0xab));
  EXPECT_TRUE(AllBytes(*mem, 4 * kMiB, 2 * kMiB, 0xab));
  EXPECT_TRUE(mem->Discard(4 * kMiB, 4096)) << "less than a huge page: nothing to give back";
  EXPECT_TRUE(AllBytes(*mem, 4 * kMiB, 4096, 0xab));
  EXPECT_FALSE(mem->Discard(5 * kMiB, 2 * kMiB)) << "past the end of guest memory";
}

// KVM maps a memory slot with huge pages only where host and guest
// addresses agree modulo 2 MiB: every region starts on a 2 MiB boundary.
TEST(HugePagesTest, EveryRegionIsTwoMiBAligned) {
  for (HugePages h : {HugePages::kNone, HugePages::kTransparent}) {
    auto mem = GuestMemory::Create({{0, 6 * kMiB}, {8 * kMiB, 2 * kMiB}}, false, h);
    ASSERT_TRUE(mem.ok()) << mem.status();
    for (const GuestRegion& r : mem->regions()) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(r.host) % (2 * kMiB), 0u) << HugePagesName(h);
    }
  }
  int fd = memfd_create("aligned-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 8 * kMiB), 0);
  auto file = GuestMemory::MapFile({{0, 6 * kMiB}, {8 * kMiB, 2 * kMiB}}, fd);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const GuestRegion& r : file->regions()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.host) % (2 * kMiB), 0u);
  }
  close(fd);
}

TEST(HugePagesTest, DiscardOnSmallPagesZeroesTheRange) {
  auto mem = GuestMemory::Create({{0, 6 * kMiB}});
  ASSERT_TRUE(mem.ok()) << mem.status();
  Fill(*mem, 0, 6 * kMiB, 0xab);
  ASSERT_TRUE(mem->Discard(1 * kMiB, 4 * kMiB));
  EXPECT_TRUE(AllBytes(*mem, 1 * kMiB - 4096, 4096, 0xab));
  EXPECT_TRUE(AllBytes(*mem, 1 * kMiB, 4 * kMiB, 0));
  EXPECT_TRUE(AllBytes(*mem, 5 * kMiB, 4096, 0xab));
}

TEST(HugePagesTest, AShortPoolFailsAtCreationWithWhatToDo) {
  HugePagePool pool(1);
  if (!pool.unavailable().empty()) GTEST_SKIP() << pool.unavailable();
  if (HugePagePool::Overcommit() > 0) GTEST_SKIP() << "surplus pages make any pool long enough";
  uint64_t pages = HugePagePool::FreePages() + 1;
  auto mem = GuestMemory::Create({{0, pages * 2 * kMiB}}, false, HugePages::k2M);
  ASSERT_FALSE(mem.ok()) << "reserved at the mmap, not a SIGBUS at the first touch";
  EXPECT_NE(mem.status().message().find("nr_hugepages"), std::string::npos) << mem.status();
}

TEST(HugePagesTest, RefusesWhatHugetlbfsCannotDo) {
  auto odd = GuestMemory::Create({{0, 3 * kMiB}}, false, HugePages::k2M);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument) << odd.status();
  auto merged = GuestMemory::Create({{0, 2 * kMiB}}, true, HugePages::k2M);
  EXPECT_NE(merged.status().message().find("KSM never merges"), std::string::npos)
      << merged.status();
  int fd = memfd_create("huge-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 2 * kMiB), 0);
  auto file = GuestMemory::MapFile({{0, 2 * kMiB}}, fd, false, HugePages::k2M);
  EXPECT_NE(file.status().message().find("cannot map a memory file"), std::string::npos)
      << file.status();
  close(fd);
}

}  // namespace
}  // namespace ember
