#include "src/vstate/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "src/common/testing/smaps.h"

namespace ember {
namespace {

using testing::VmFlags;


bool Mergeable(const GuestMemory& mem) {
  for (const GuestRegion& r : mem.regions()) {
    if (VmFlags(r.host).find(" mg ") == std::string::npos) return false;
  }
  return true;
}

bool HostHasKsm() { return access("/sys/kernel/mm/ksm/run", F_OK) == 0; }

int MemoryFile(size_t size) {
  int fd = memfd_create("guest-mem-test", MFD_CLOEXEC);
  if (fd >= 0 && ftruncate(fd, static_cast<off_t>(size)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(GuestMemoryTest, NotMergeableByDefault) {
  ASSERT_FALSE(GuestMemory::mergeable_by_default());
  auto mem = GuestMemory::Create({{0, 1 << 20}, {4 << 20, 1 << 20}});
  ASSERT_TRUE(mem.ok()) << mem.status();
  ASSERT_NE(VmFlags(mem->regions()[0].host), "") << "the mapping is in smaps";
  EXPECT_EQ(VmFlags(mem->regions()[0].host).find(" mg "), std::string::npos);
  EXPECT_EQ(VmFlags(mem->regions()[1].host).find(" mg "), std::string::npos);
  int fd = MemoryFile(2 << 20);
  ASSERT_GE(fd, 0);
  auto restored = GuestMemory::MapFile({{0, 1 << 20}, {4 << 20, 1 << 20}}, fd);
  close(fd);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(VmFlags(restored->regions()[0].host).find(" mg "), std::string::npos);
}

TEST(GuestMemoryTest, MergeableWhenAsked) {
  if (!HostHasKsm()) GTEST_SKIP() << "the host kernel has no KSM";
  auto mem = GuestMemory::Create({{0, 1 << 20}, {4 << 20, 1 << 20}}, /*mergeable=*/true);
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_TRUE(Mergeable(*mem)) << VmFlags(mem->regions()[0].host);
  int fd = MemoryFile(2 << 20);
  ASSERT_GE(fd, 0);
  auto restored = GuestMemory::MapFile({{0, 1 << 20}, {4 << 20, 1 << 20}}, fd, true);
  close(fd);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_TRUE(Mergeable(*restored));
}

// What main.cc does for --merge-guest-memory: the builder's calls, which
// pass no flag, then map mergeable memory.
TEST(GuestMemoryTest, TheProcessDefaultAppliesToLaterMappings) {
  if (!HostHasKsm()) GTEST_SKIP() << "the host kernel has no KSM";
  GuestMemory::SetMergeableByDefault(true);
  auto on = GuestMemory::Create({{0, 1 << 20}});
  GuestMemory::SetMergeableByDefault(false);
  auto off = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(on.ok() && off.ok());
  EXPECT_TRUE(Mergeable(*on));
  EXPECT_FALSE(Mergeable(*off));
}

TEST(GuestMemoryTest, ReadsBackWhatItWrites) {
  auto mem = GuestMemory::Create({{0, 1 << 20}, {4 << 20, 1 << 20}});
  ASSERT_TRUE(mem.ok()) << mem.status();
  std::vector<uint8_t> data = {1, 2, 3, 4};
  ASSERT_TRUE(mem->Write((4 << 20) + 10, data).ok());
  std::vector<uint8_t> out(4);
  ASSERT_TRUE(mem->Read((4 << 20) + 10, out).ok());
  EXPECT_EQ(out, data);
  EXPECT_EQ(mem->total_size(), 2u << 20);
}

TEST(GuestMemoryTest, RefusesRangesOutsideRegions) {
  auto mem = GuestMemory::Create({{0, 1 << 20}, {4 << 20, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  EXPECT_TRUE(mem->Contains(0, 1 << 20));
  EXPECT_FALSE(mem->Contains(0, (1 << 20) + 1));         // runs off the end
  EXPECT_FALSE(mem->Contains((1 << 20) - 2, 4));         // straddles the end
  EXPECT_FALSE(mem->Contains(2 << 20, 1));               // in the gap
  EXPECT_FALSE(mem->Contains((4 << 20) + 8, UINT64_MAX)); // length overflows
  EXPECT_FALSE(mem->Contains(UINT64_MAX, 2));             // address overflows
  EXPECT_TRUE(mem->Contains(1 << 20, 0));                 // empty range at the end
  std::vector<uint8_t> out(8);
  absl::Status st = mem->Read((1 << 20) - 4, out);
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("outside guest memory"), std::string::npos);
}

TEST(GuestMemoryTest, RefusesBadLayouts) {
  EXPECT_FALSE(GuestMemory::Create({{0, 0}}).ok());
  EXPECT_FALSE(GuestMemory::Create({{0, 100}}).ok());                   // not page sized
  EXPECT_FALSE(GuestMemory::Create({{0x800, 4096}}).ok());               // not page aligned
  EXPECT_FALSE(GuestMemory::Create({{0, 8192}, {4096, 4096}}).ok());     // overlap
  EXPECT_FALSE(GuestMemory::Create({{UINT64_MAX - 4095, 8192}}).ok());   // wraps
}

TEST(GuestMemoryTest, TypedAccess) {
  auto mem = GuestMemory::Create({{0, 4096}});
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(mem->WriteObj<uint64_t>(8, 0x1122334455667788).ok());
  auto v = mem->ReadObj<uint64_t>(8);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0x1122334455667788u);
  EXPECT_FALSE(mem->ReadObj<uint64_t>(4092).ok());
}

TEST(GuestMemoryTest, DirtyTrackingMarksWhatSlicesCover) {
  auto mem = GuestMemory::Create({{0, 8 * 4096}});
  ASSERT_TRUE(mem.ok());
  mem->EnableDirtyTracking();
  ASSERT_TRUE(mem->Slice(4096 - 1, 2).ok());  // pages 0 and 1
  ASSERT_TRUE(mem->WriteObj<uint32_t>(5 * 4096, 7).ok());
  ASSERT_TRUE(mem->HostRange(2 * 4096, 3 * 4096).ok());  // advice only: no page
  EXPECT_FALSE(mem->HostRange(7 * 4096, 2 * 4096).ok());
  EXPECT_EQ(mem->TakeDirtyPages(0), std::vector<uint64_t>{0b100011});
  EXPECT_EQ(mem->TakeDirtyPages(0), std::vector<uint64_t>{0}) << "taking clears";
}

TEST(GuestMemoryTest, EmptyRangesMarkNoPage) {
  // 65 pages: two bitmap words, of which bits 65..127 name no page. A
  // zero-length descriptor at the very end of the region used to mark
  // "page 65"; with 64 pages that bit lay past the bitmap itself.
  auto mem = GuestMemory::Create({{0, 65 * 4096}, {1 << 20, 64 * 4096}});
  ASSERT_TRUE(mem.ok());
  mem->EnableDirtyTracking();
  ASSERT_TRUE(mem->Slice(65 * 4096, 0).ok());
  ASSERT_TRUE(mem->Slice((1 << 20) + 64 * 4096, 0).ok());
  ASSERT_TRUE(mem->Slice(3 * 4096, 0).ok());
  ASSERT_TRUE(mem->Write(10 * 4096, {}).ok());
  EXPECT_EQ(mem->TakeDirtyPages(0), (std::vector<uint64_t>{0, 0}));
  EXPECT_EQ(mem->TakeDirtyPages(1), std::vector<uint64_t>{0});
  // The last page itself is still marked by a write that covers it.
  ASSERT_TRUE(mem->Slice(65 * 4096 - 1, 1).ok());
  EXPECT_EQ(mem->TakeDirtyPages(0), (std::vector<uint64_t>{0, 1}));
}

TEST(GuestMemoryTest, ResidentPagesAreThoseTouched) {
  auto mem = GuestMemory::Create({{0, 128 * 4096}});
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(mem->Write(0, std::vector<uint8_t>{1}).ok());
  ASSERT_TRUE(mem->Write(66 * 4096, std::vector<uint8_t>{1}).ok());
  absl::StatusOr<std::vector<uint64_t>> pages = mem->ResidentPages(0);
  ASSERT_TRUE(pages.ok()) << pages.status();
  EXPECT_EQ(*pages, (std::vector<uint64_t>{1, 0b100}));
}

TEST(GuestMemoryTest, TheHotplugRegionIsReachedOnlyWherePlugged) {
  constexpr uint64_t kSlot = 2 << 20, kBase = 16 << 20;
  auto mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  EXPECT_FALSE(mem->AddHotplugRegion(1 << 19, 2 * kSlot, kSlot).ok()) << "over RAM";
  EXPECT_FALSE(mem->AddHotplugRegion(kBase, 3 * kSlot / 2, kSlot).ok()) << "not whole slots";
  ASSERT_TRUE(mem->AddHotplugRegion(kBase, 3 * kSlot, kSlot).ok());
  EXPECT_FALSE(mem->AddHotplugRegion(kBase + 8 * kSlot, kSlot, kSlot).ok()) << "only one";
  EXPECT_EQ(mem->end(), kBase + 3 * kSlot);
  EXPECT_EQ(mem->regions().size(), 1u) << "not among RAM's regions";
  EXPECT_EQ(mem->total_size(), 1u << 20);
  EXPECT_FALSE(mem->Contains(kBase, 1));
  ASSERT_TRUE(mem->SetHotplugSlot(1, true).ok());
  EXPECT_FALSE(mem->SetHotplugSlot(3, true).ok()) << "no such slot";
  EXPECT_TRUE(mem->WriteObj<uint64_t>(kBase + kSlot, 42).ok());
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kBase + kSlot), 42u);
  EXPECT_TRUE(mem->Contains(kBase + kSlot + 8, 0)) << "an empty range in a plugged slot";
  EXPECT_FALSE(mem->Contains(kBase + 2 * kSlot, 0)) << "an empty range names its slot";
  EXPECT_FALSE(mem->Contains(kBase + kSlot - 1, 2)) << "reaches into slot 0";
  EXPECT_FALSE(mem->Contains(kBase + 2 * kSlot - 1, 2)) << "reaches into slot 2";
  ASSERT_TRUE(mem->SetHotplugSlot(2, true).ok());
  EXPECT_TRUE(mem->Contains(kBase + 2 * kSlot - 1, 2)) << "two plugged slots";
  EXPECT_TRUE(mem->Discard(kBase + kSlot, kSlot));
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kBase + kSlot), 0u) << "discarded: zero";
  ASSERT_TRUE(mem->SetHotplugSlot(1, false).ok());
  EXPECT_FALSE(mem->Write(kBase + kSlot, std::vector<uint8_t>{1}).ok());
  EXPECT_FALSE(mem->Discard(kBase + kSlot, 4096));
  GuestMemory moved = std::move(*mem);
  EXPECT_TRUE(moved.hotplug_slot_plugged(2));
  EXPECT_TRUE(moved.Contains(kBase + 2 * kSlot, 8)) << "a move keeps the region";
}

}  // namespace
}  // namespace ember
