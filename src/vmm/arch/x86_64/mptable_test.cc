#include "src/vmm/arch/x86_64/mptable.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "src/vmm/arch/x86_64/layout.h"

namespace ember::x86_64 {
namespace {

uint8_t Sum(const std::vector<uint8_t>& bytes) {
  uint8_t s = 0;
  for (uint8_t b : bytes) s += b;
  return s;
}

std::vector<uint8_t> ReadBytes(const GuestMemory& mem, uint64_t addr, size_t len) {
  std::vector<uint8_t> out(len);
  EXPECT_TRUE(mem.Read(addr, out).ok());
  return out;
}

class MpTableTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MpTableTest, IsWellFormedForEachCpuCount) {
  const uint32_t cpus = GetParam();
  auto mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(WriteMpTable(*mem, cpus).ok());

  std::vector<uint8_t> fp = ReadBytes(*mem, kEbdaStart, 16);
  EXPECT_EQ(std::memcmp(fp.data(), "_MP_", 4), 0);
  EXPECT_EQ(Sum(fp), 0) << "floating pointer checksum";
  uint32_t table_addr;
  std::memcpy(&table_addr, fp.data() + 4, 4);
  EXPECT_EQ(table_addr, kEbdaStart + 16);

  std::vector<uint8_t> header = ReadBytes(*mem, table_addr, 44);
  EXPECT_EQ(std::memcmp(header.data(), "PCMP", 4), 0);
  uint16_t length, count;
  uint32_t lapic;
  std::memcpy(&length, header.data() + 4, 2);
  std::memcpy(&count, header.data() + 34, 2);
  std::memcpy(&lapic, header.data() + 36, 4);
  EXPECT_EQ(lapic, kLapicAddr);
  EXPECT_LE(table_addr + length, 0xa0000u) << "must stay below 640 KiB";
  std::vector<uint8_t> table = ReadBytes(*mem, table_addr, length);
  EXPECT_EQ(Sum(table), 0) << "configuration table checksum";

  // Walk the entries: processors first, with the BSP flag on CPU 0 only.
  size_t pos = 44;
  uint32_t processors = 0, io_interrupts = 0, local_interrupts = 0, ioapics = 0;
  for (uint16_t i = 0; i < count; i++) {
    ASSERT_LT(pos, table.size());
    uint8_t type = table[pos];
    if (type == 0) {
      EXPECT_EQ(table[pos + 1], processors) << "APIC id";
      EXPECT_EQ((table[pos + 3] & 2) != 0, processors == 0) << "BSP flag";
      EXPECT_TRUE(table[pos + 3] & 1) << "enabled";
      processors++;
      pos += 20;
    } else {
      if (type == 2) {
        ioapics++;
        EXPECT_EQ(table[pos + 1], cpus) << "IOAPIC id follows the CPUs";
      }
      if (type == 3) io_interrupts++;
      if (type == 4) local_interrupts++;
      pos += 8;
    }
  }
  EXPECT_EQ(pos, table.size());
  EXPECT_EQ(processors, cpus);
  EXPECT_EQ(ioapics, 1u);
  EXPECT_EQ(io_interrupts, kIoapicPins);
  EXPECT_EQ(local_interrupts, 2u);
}

INSTANTIATE_TEST_SUITE_P(CpuCounts, MpTableTest, ::testing::Values(1, 2, 7, 32));

TEST(MpTableErrorsTest, RefusesBadCpuCounts) {
  auto mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  EXPECT_FALSE(WriteMpTable(*mem, 0).ok());
  EXPECT_FALSE(WriteMpTable(*mem, kMaxVcpus + 1).ok());
}

TEST(MpTableErrorsTest, FailsCleanlyWithoutBaseMemory) {
  auto mem = GuestMemory::Create({{0, 0x9f000}});  // ends below the table
  ASSERT_TRUE(mem.ok());
  EXPECT_FALSE(WriteMpTable(*mem, 1).ok());
}

}  // namespace
}  // namespace ember::x86_64
