#include "src/vmm/arch/x86_64/regs.h"

#include <gtest/gtest.h>

#include "src/vmm/arch/x86_64/layout.h"

namespace ember::x86_64 {
namespace {

TEST(GdtTest, EntryAndSegmentRoundTrip) {
  uint64_t code = GdtEntry(0xa09b, 0, 0xfffff);
  EXPECT_EQ(code, 0x00af9b000000ffffULL);
  kvm_segment seg = SegmentFromGdt(code, 1);
  EXPECT_EQ(seg.selector, 8);
  EXPECT_EQ(seg.limit, 0xffffffffu) << "G scales the limit to bytes";
  EXPECT_EQ(seg.l, 1);
  EXPECT_EQ(seg.db, 0);
  EXPECT_EQ(seg.present, 1);
  EXPECT_EQ(seg.s, 1);
  EXPECT_EQ(seg.type, 0xb);

  uint64_t odd = GdtEntry(0x0093, 0x12345678, 0xabcde);
  kvm_segment s2 = SegmentFromGdt(odd, 2);
  EXPECT_EQ(s2.base, 0x12345678u);
  EXPECT_EQ(s2.limit, 0xabcdeu) << "byte granular";
  EXPECT_EQ(s2.g, 0);
}

TEST(BootTablesTest, IdentityMapsTheFirstGiB) {
  auto mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(WriteBootTables(*mem, BootProtocol::kLinux64).ok());
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kPml4Start), kPdptStart | 3);
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kPdptStart), kPdStart | 3);
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kPdStart), 0x83u);
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kPdStart + 511 * 8), (511ULL << 21) | 0x83);
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kGdtStart + 8), GdtEntry(0xa09b, 0, 0xfffff));
}

TEST(BootTablesTest, PvhHasA32BitGdtAndNoPageTables) {
  auto mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(WriteBootTables(*mem, BootProtocol::kPvh).ok());
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kGdtStart + 8), GdtEntry(0xc09b, 0, 0xfffff));
  EXPECT_EQ(*mem->ReadObj<uint64_t>(kPml4Start), 0u);
}

TEST(BootTablesTest, FailsCleanlyWithoutRoom) {
  auto mem = GuestMemory::Create({{0, 4096}});
  ASSERT_TRUE(mem.ok());
  EXPECT_FALSE(WriteBootTables(*mem, BootProtocol::kLinux64).ok());
}

TEST(SregsTest, LongModeForLinux64) {
  kvm_sregs s = BootSregs(kvm_sregs{}, BootProtocol::kLinux64);
  EXPECT_EQ(s.cr3, kPml4Start);
  EXPECT_TRUE(s.cr0 & (1u << 31)) << "paging";
  EXPECT_TRUE(s.cr0 & 1) << "protected mode";
  EXPECT_TRUE(s.cr4 & (1u << 5)) << "PAE";
  EXPECT_EQ(s.efer & 0x500, 0x500u) << "LME and LMA";
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.gdt.base, kGdtStart);
}

TEST(SregsTest, ProtectedModeWithoutPagingForPvh) {
  kvm_sregs s = BootSregs(kvm_sregs{}, BootProtocol::kPvh);
  EXPECT_EQ(s.cr0 & (1u << 31), 0u);
  EXPECT_TRUE(s.cr0 & 1);
  EXPECT_EQ(s.efer, 0u);
  EXPECT_EQ(s.cs.l, 0);
  EXPECT_EQ(s.cs.db, 1);
}

TEST(RegsTest, EntryRegistersPerProtocol) {
  kvm_regs linux64 = BootRegs(BootProtocol::kLinux64, 0x1000000);
  EXPECT_EQ(linux64.rip, 0x1000000u);
  EXPECT_EQ(linux64.rsi, kZeroPageStart);
  EXPECT_EQ(linux64.rsp, kBootStackPointer);
  EXPECT_EQ(linux64.rflags, 2u);
  kvm_regs pvh = BootRegs(BootProtocol::kPvh, 0x1000020);
  EXPECT_EQ(pvh.rbx, kPvhInfoStart);
  EXPECT_EQ(pvh.rip, 0x1000020u);
}

TEST(LapicTest, Lint0ExtIntLint1Nmi) {
  kvm_lapic_state lapic = {};
  lapic.regs[0x350] = 0xff;  // vector bits survive, mode bits change
  SetLapicLints(lapic);
  uint32_t lvt0, lvt1;
  std::memcpy(&lvt0, lapic.regs + 0x350, 4);
  std::memcpy(&lvt1, lapic.regs + 0x360, 4);
  EXPECT_EQ(lvt0, 0x7ffu);
  EXPECT_EQ((lvt1 >> 8) & 7, 4u);
}

}  // namespace
}  // namespace ember::x86_64
