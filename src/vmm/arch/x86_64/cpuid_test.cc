#include "src/vmm/arch/x86_64/cpuid.h"

#include <gtest/gtest.h>

#include <optional>

namespace ember::x86_64 {
namespace {

kvm_cpuid_entry2 Leaf(uint32_t fn, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                      uint32_t edx) {
  kvm_cpuid_entry2 e = {};
  e.function = fn;
  e.index = index;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

std::optional<kvm_cpuid_entry2> Find(const CpuidEntries& entries, uint32_t fn, uint32_t index) {
  for (const auto& e : entries) {
    if (e.function == fn && e.index == index) return e;
  }
  return std::nullopt;
}

// An Intel-like host: vendor, features, L1 and L3 cache leaves, topology.
CpuidEntries IntelHost() {
  return {Leaf(0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
          Leaf(1, 0, 0x806f8, 0xff080800, 0x7ffaf203, 0x1f8bfbff),
          Leaf(4, 0, 0xfc004121, 0, 0, 0), Leaf(4, 3, 0xfc07c163, 0, 0, 0),
          Leaf(0xb, 0, 1, 2, 0x100, 7), Leaf(0xb, 1, 7, 96, 0x201, 7)};
}

CpuidEntries AmdHost() {
  return {Leaf(0, 0, 0x10, 0x68747541, 0x444d4163, 0x69746e65),
          Leaf(1, 0, 0xa00f11, 0x00800800, 0x7ed8320b, 0x178bfbff),
          Leaf(0x80000008, 0, 0x3030, 0, 0x7007, 0), Leaf(0x8000001e, 0, 9, 0x105, 0x301, 0)};
}

TEST(CpuidTest, Leaf1CarriesApicIdCountAndHypervisorBit) {
  CpuidEntries out = FilterCpuid(IntelHost(), 3, 4);
  auto l1 = Find(out, 1, 0);
  ASSERT_TRUE(l1);
  EXPECT_EQ(l1->ebx >> 24, 3u) << "initial APIC id";
  EXPECT_EQ((l1->ebx >> 16) & 0xff, 4u) << "logical processors";
  EXPECT_EQ(l1->ebx & 0xffff, 0x0800u) << "CLFLUSH size kept";
  EXPECT_TRUE(l1->ecx & (1u << 31)) << "hypervisor";
  EXPECT_TRUE(l1->edx & (1u << 28)) << "HTT with more than one CPU";

  auto single = Find(FilterCpuid(IntelHost(), 0, 1), 1, 0);
  EXPECT_FALSE(single->edx & (1u << 28));
}

TEST(CpuidTest, TopologyLeafDescribesOneSocketOfCores) {
  CpuidEntries out = FilterCpuid(IntelHost(), 5, 6);
  auto smt = Find(out, 0xb, 0), core = Find(out, 0xb, 1), end = Find(out, 0xb, 2);
  ASSERT_TRUE(smt && core && end);
  EXPECT_EQ(smt->eax, 0u);
  EXPECT_EQ(smt->ebx, 1u);
  EXPECT_EQ((smt->ecx >> 8) & 0xff, 1u);
  EXPECT_EQ(core->eax, 3u) << "6 cores need 3 APIC id bits";
  EXPECT_EQ(core->ebx, 6u);
  EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);
  EXPECT_EQ((end->ecx >> 8) & 0xff, 0u);
  EXPECT_EQ(smt->edx, 5u);
  EXPECT_EQ(core->edx, 5u);
  EXPECT_TRUE(smt->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
}

TEST(CpuidTest, CacheLeafSharesOnlyTheLastLevel) {
  CpuidEntries out = FilterCpuid(IntelHost(), 0, 8);
  auto l1 = Find(out, 4, 0), l3 = Find(out, 4, 3);
  ASSERT_TRUE(l1 && l3);
  EXPECT_EQ((l1->eax >> 14) & 0xfff, 0u);
  EXPECT_EQ((l3->eax >> 14) & 0xfff, 7u);
  EXPECT_EQ(l1->eax >> 26, 7u);
  EXPECT_EQ(l1->eax & 0x3fff, 0x0121u) << "cache type and level kept";
}

TEST(CpuidTest, AmdLeavesCarryCoreCountAndExtendedApicId) {
  CpuidEntries out = FilterCpuid(AmdHost(), 2, 4);
  auto sizes = Find(out, 0x80000008, 0), topo = Find(out, 0x8000001e, 0);
  ASSERT_TRUE(sizes && topo);
  EXPECT_EQ(sizes->ecx & 0xff, 3u);
  EXPECT_EQ((sizes->ecx >> 12) & 0xf, 2u);
  EXPECT_EQ(sizes->eax, 0x3030u) << "address sizes kept";
  EXPECT_EQ(topo->eax, 2u);
  EXPECT_EQ(topo->ebx & 0xff, 2u);
  EXPECT_EQ((topo->ebx >> 8) & 0xff, 0u) << "one thread per core";
}

// An emulated AMD CPU may lack topology extensions; the guest then sees no
// threads or cores unless Ember describes them, as Firecracker does.
TEST(CpuidTest, AmdWithoutTopologyExtensionsGetsThem) {
  CpuidEntries host = {Leaf(0, 0, 0x10, 0x68747541, 0x444d4163, 0x69746e65),
                       Leaf(1, 0, 0xa00f11, 0x00800800, 0x7ed8320b, 0x178bfbff),
                       Leaf(0x80000000, 0, 0x8000000a, 0x68747541, 0x444d4163, 0x69746e65),
                       Leaf(0x80000001, 0, 0xa00f11, 0, 0x3, 0x2fd3fbff)};
  CpuidEntries out = FilterCpuid(host, 3, 4, /*smt=*/true);
  auto max = Find(out, 0x80000000, 0), ext = Find(out, 0x80000001, 0);
  auto topo = Find(out, 0x8000001e, 0);
  ASSERT_TRUE(max && ext && topo);
  EXPECT_EQ(max->eax, 0x8000001eu);
  EXPECT_EQ(ext->ecx, 0x3u | (1u << 22)) << "TopologyExtensions, the rest kept";
  EXPECT_EQ(topo->eax, 3u);
  EXPECT_EQ(topo->ebx, 0x101u) << "core 1, two threads a core";
  EXPECT_FALSE(Find(FilterCpuid(IntelHost(), 0, 2), 0x8000001e, 0)) << "Intel gets none";
}

// machine-config.smt: vCPUs 2k and 2k + 1 are the threads of core k.
TEST(CpuidTest, SmtPairsVcpusIntoTwoThreadCores) {
  CpuidEntries out = FilterCpuid(IntelHost(), 3, 4, /*smt=*/true);
  auto smt = Find(out, 0xb, 0), core = Find(out, 0xb, 1);
  ASSERT_TRUE(smt && core);
  EXPECT_EQ(smt->eax, 1u) << "the thread is the APIC id's low bit";
  EXPECT_EQ(smt->ebx, 2u) << "two threads a core";
  EXPECT_EQ(smt->edx, 3u);
  EXPECT_EQ(core->eax, 2u);
  EXPECT_EQ(core->ebx, 4u);
  auto l1 = Find(out, 1, 0), l1d = Find(out, 4, 0), l3 = Find(out, 4, 3);
  ASSERT_TRUE(l1 && l1d && l3);
  EXPECT_EQ((l1->ebx >> 16) & 0xff, 4u) << "logical processors";
  EXPECT_EQ((l1d->eax >> 14) & 0xfff, 1u) << "a core's two threads share its L1";
  EXPECT_EQ((l3->eax >> 14) & 0xfff, 3u) << "all four share L3";
  EXPECT_EQ(l1d->eax >> 26, 1u) << "two cores";

  // AMD's cache leaf the same way: a core's L1 for its two threads, L3 for
  // all; the null subleaf that ends it untouched.
  CpuidEntries amd_host = AmdHost();
  amd_host.push_back(Leaf(0x8000001d, 0, 0x00004121, 0, 0, 0));  // L1d shared by 2 host threads
  amd_host.push_back(Leaf(0x8000001d, 3, 0x0003c163, 0, 0, 0));  // L3 shared by 16
  amd_host.push_back(Leaf(0x8000001d, 4, 0, 0, 0, 0));
  CpuidEntries amd_out = FilterCpuid(amd_host, 3, 4, true);
  auto amd_l1 = Find(amd_out, 0x8000001d, 0), amd_l3 = Find(amd_out, 0x8000001d, 3);
  auto amd_end = Find(amd_out, 0x8000001d, 4);
  ASSERT_TRUE(amd_l1 && amd_l3 && amd_end);
  EXPECT_EQ((amd_l1->eax >> 14) & 0xfff, 1u);
  EXPECT_EQ((amd_l3->eax >> 14) & 0xfff, 3u);
  EXPECT_EQ(amd_end->eax, 0u);
  EXPECT_EQ((Find(FilterCpuid(amd_host, 0, 4), 0x8000001d, 0)->eax >> 14) & 0xfff, 0u)
      << "without SMT, one thread a core whatever the host has";
  auto amd = Find(FilterCpuid(AmdHost(), 3, 4, true), 0x8000001e, 0);
  ASSERT_TRUE(amd);
  EXPECT_EQ(amd->ebx & 0xff, 1u) << "core 1";
  EXPECT_EQ((amd->ebx >> 8) & 0xff, 1u) << "two threads a core";
  // One vCPU has no sibling, SMT or not.
  auto alone = Find(FilterCpuid(IntelHost(), 0, 1, true), 0xb, 0);
  ASSERT_TRUE(alone);
  EXPECT_EQ(alone->ebx, 1u);
  EXPECT_EQ(alone->eax, 0u);
}

TEST(CpuidTest, IntelHostKeepsReservedAddressSizeEcx) {
  CpuidEntries host = IntelHost();
  host.push_back(Leaf(0x80000008, 0, 0x3027, 0, 0, 0));
  auto sizes = Find(FilterCpuid(host, 1, 4), 0x80000008, 0);
  ASSERT_TRUE(sizes);
  EXPECT_EQ(sizes->ecx, 0u);
}

TEST(CpuidTest, EachVcpuGetsItsOwnApicIdFromTheRealHost) {
  auto kvm = Kvm::Open();
  if (!kvm.ok()) GTEST_SKIP() << kvm.status();
  auto supported = kvm->SupportedCpuid();
  ASSERT_TRUE(supported.ok()) << supported.status();
  ASSERT_FALSE(supported->empty());
  for (uint32_t i = 0; i < 4; i++) {
    auto l1 = Find(FilterCpuid(*supported, i, 4), 1, 0);
    ASSERT_TRUE(l1);
    EXPECT_EQ(l1->ebx >> 24, i);
  }
}

}  // namespace
}  // namespace ember::x86_64
