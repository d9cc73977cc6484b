#include "src/vmm/arch/x86_64/boot_params.h"

#include <gtest/gtest.h>

#include "src/vmm/arch/x86_64/layout.h"

namespace ember::x86_64 {
namespace {

GuestMemory Memory(uint64_t size) {
  auto ranges = RamRanges(size);
  EXPECT_TRUE(ranges.ok());
  auto mem = GuestMemory::Create(*ranges);
  EXPECT_TRUE(mem.ok());
  return std::move(*mem);
}

TEST(LayoutTest, SplitsRamAroundTheMmioHole) {
  auto small = RamRanges(128 << 20);
  ASSERT_TRUE(small.ok());
  ASSERT_EQ(small->size(), 1u);
  EXPECT_EQ((*small)[0].size, 128u << 20);

  auto big = RamRanges(4ULL << 30);
  ASSERT_TRUE(big.ok());
  ASSERT_EQ(big->size(), 2u);
  EXPECT_EQ((*big)[0].guest_addr, 0u);
  EXPECT_EQ((*big)[0].size, kMmioHoleStart);
  EXPECT_EQ((*big)[1].guest_addr, kMmioHoleEnd);
  EXPECT_EQ((*big)[1].size, (4ULL << 30) - kMmioHoleStart);

  EXPECT_FALSE(RamRanges(0).ok());
  EXPECT_FALSE(RamRanges(4097).ok());
  EXPECT_FALSE(RamRanges(kMaxMemSize + 4096).ok());
}

TEST(E820Test, ListsBaseMemoryAndEachRegionAbove1MiB) {
  GuestMemory mem = Memory(128 << 20);
  auto e820 = BuildE820(mem);
  ASSERT_EQ(e820.size(), 2u);
  EXPECT_EQ(e820[0].addr, 0u);
  EXPECT_EQ(e820[0].size, kEbdaStart);  // stops below the MP table
  EXPECT_EQ(e820[1].addr, kHighMemStart);
  EXPECT_EQ(e820[1].size, (128u << 20) - kHighMemStart);
  for (const auto& e : e820) EXPECT_EQ(e.type, kE820Ram);
}

TEST(E820Test, HasAnEntryAbove4GiB) {
  auto ranges = RamRanges(4ULL << 30);
  ASSERT_TRUE(ranges.ok());
  // Only the layout matters; map a small stand-in for the high region.
  auto mem = GuestMemory::Create({(*ranges)[0], {kMmioHoleEnd, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  auto e820 = BuildE820(*mem);
  ASSERT_EQ(e820.size(), 3u);
  EXPECT_EQ(e820[1].addr + e820[1].size, kMmioHoleStart);
  EXPECT_EQ(e820[2].addr, kMmioHoleEnd);
}

TEST(ZeroPageTest, VmlinuxGetsAMinimalHeader) {
  GuestMemory mem = Memory(128 << 20);
  BootInfo info{kCmdlineStart, 20, 0x7000000, 0x1234};
  auto zp = BuildZeroPage(BuildE820(mem), info, std::nullopt);
  ASSERT_TRUE(zp.ok());
  EXPECT_EQ(zp->hdr.header, 0x53726448u);
  EXPECT_EQ(zp->hdr.boot_flag, 0xaa55);
  EXPECT_EQ(zp->hdr.type_of_loader, 0xff);
  EXPECT_EQ(zp->hdr.cmd_line_ptr, kCmdlineStart);
  EXPECT_EQ(zp->hdr.cmdline_size, 20u);
  EXPECT_EQ(zp->hdr.ramdisk_image, 0x7000000u);
  EXPECT_EQ(zp->hdr.ramdisk_size, 0x1234u);
  ASSERT_EQ(zp->e820_entries, 2);
  EXPECT_EQ(zp->e820_table[1].addr, kHighMemStart);
}

TEST(ZeroPageTest, KeepsABzImageHeaderAndSetsLoaderFields) {
  setup_header hdr = {};
  hdr.header = 0x53726448;
  hdr.version = 0x020f;
  hdr.setup_sects = 27;
  hdr.init_size = 0x123000;
  auto zp = BuildZeroPage({{0, kEbdaStart, kE820Ram}}, BootInfo{kCmdlineStart, 5, 0, 0}, hdr);
  ASSERT_TRUE(zp.ok());
  EXPECT_EQ(zp->hdr.version, 0x020f);
  EXPECT_EQ(zp->hdr.setup_sects, 27);
  EXPECT_EQ(zp->hdr.init_size, 0x123000u);
  EXPECT_EQ(zp->hdr.type_of_loader, 0xff);
  EXPECT_EQ(zp->hdr.cmd_line_ptr, kCmdlineStart);
}

TEST(ZeroPageTest, RefusesTooManyE820Entries) {
  std::vector<E820Entry> e820(E820_MAX_ENTRIES_ZEROPAGE + 1, {0, 4096, kE820Ram});
  EXPECT_FALSE(BuildZeroPage(e820, BootInfo{}, std::nullopt).ok());
}

TEST(PvhTest, WritesStartInfoModuleAndMemoryMap) {
  GuestMemory mem = Memory(128 << 20);
  auto e820 = BuildE820(mem);
  BootInfo info{kCmdlineStart, 10, 0x6000000, 4096};
  ASSERT_TRUE(WritePvhStartInfo(mem, e820, info).ok());
  auto start = mem.ReadObj<HvmStartInfo>(kPvhInfoStart);
  ASSERT_TRUE(start.ok());
  EXPECT_EQ(start->magic, kHvmStartMagic);
  EXPECT_EQ(start->version, 1u);
  EXPECT_EQ(start->cmdline_paddr, kCmdlineStart);
  EXPECT_EQ(start->nr_modules, 1u);
  EXPECT_EQ(start->memmap_entries, e820.size());
  auto mod = mem.ReadObj<HvmModlistEntry>(start->modlist_paddr);
  ASSERT_TRUE(mod.ok());
  EXPECT_EQ(mod->paddr, 0x6000000u);
  EXPECT_EQ(mod->size, 4096u);
  auto last = mem.ReadObj<HvmMemmapEntry>(start->memmap_paddr + sizeof(HvmMemmapEntry));
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->addr, kHighMemStart);
  EXPECT_EQ(last->type, kE820Ram);
}

TEST(PvhTest, NoInitrdMeansNoModules) {
  GuestMemory mem = Memory(64 << 20);
  ASSERT_TRUE(WritePvhStartInfo(mem, BuildE820(mem), BootInfo{kCmdlineStart, 1, 0, 0}).ok());
  auto start = mem.ReadObj<HvmStartInfo>(kPvhInfoStart);
  ASSERT_TRUE(start.ok());
  EXPECT_EQ(start->nr_modules, 0u);
  EXPECT_EQ(start->modlist_paddr, 0u);
}

}  // namespace
}  // namespace ember::x86_64
