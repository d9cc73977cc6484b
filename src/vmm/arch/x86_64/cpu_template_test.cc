// A custom CPU template on CPUID lists without KVM, and on a real vCPU's
// MSRs where /dev/kvm exists.
#include "src/vmm/arch/x86_64/cpu_template.h"

#include <gtest/gtest.h>

#include "src/vmm/arch/x86_64/cpu_state.h"
#include "src/vmm/arch/x86_64/cpuid.h"

namespace ember::x86_64 {
namespace {

kvm_cpuid_entry2 Leaf(uint32_t fn, uint32_t index, uint32_t ecx) {
  kvm_cpuid_entry2 e = {};
  e.function = fn;
  e.index = index;
  e.ecx = ecx;
  return e;
}

CpuidLeafModifier Modifier(uint32_t leaf, uint32_t subleaf, int reg, uint32_t filter,
                           uint32_t value) {
  return {leaf, subleaf, 0, {{reg, {filter, value}}}};
}

TEST(CpuTemplateTest, ForcesOnlyTheFilteredBitsOfTheNamedLeaf) {
  CpuidEntries host = {Leaf(1, 0, 0xffff0000), Leaf(7, 0, 0x0000ffff), Leaf(7, 1, 0x12)};
  CpuTemplate t;
  t.cpuid_modifiers = {Modifier(7, 0, 2, 0x000000f0, 0x00000050)};
  t.cpuid_modifiers[0].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  absl::StatusOr<CpuidEntries> out = ApplyCpuidTemplate(host, t);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].ecx, 0xffff0000u) << "another leaf";
  EXPECT_EQ((*out)[1].ecx, 0x0000ff5fu) << "bits 4-7 forced to 0101, the rest kept";
  EXPECT_EQ((*out)[1].flags, static_cast<uint32_t>(KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
  EXPECT_EQ((*out)[2].ecx, 0x12u) << "another subleaf";
}

// Ember's topology is written after the template: it wins.
TEST(CpuTemplateTest, TheVmsTopologyIsWrittenAfterTheTemplate) {
  CpuidEntries host = {Leaf(1, 0, 0)};
  CpuTemplate t;
  t.cpuid_modifiers = {Modifier(1, 0, 1, 0xff000000, 0x7f000000),  // initial APIC id
                       Modifier(1, 0, 2, 1u << 31, 0)};            // hypervisor bit off
  absl::StatusOr<CpuidEntries> out = ApplyCpuidTemplate(host, t);
  ASSERT_TRUE(out.ok()) << out.status();
  CpuidEntries vcpu2 = FilterCpuid(*out, 2, 4);
  EXPECT_EQ(vcpu2[0].ebx >> 24, 2u);
  EXPECT_TRUE(vcpu2[0].ecx & (1u << 31));
}

// As in Firecracker, a template cannot change the CPU's vendor.
TEST(CpuTemplateTest, TheVendorStaysTheHosts) {
  kvm_cpuid_entry2 vendor = Leaf(0, 0, 0x444d4163);
  vendor.ebx = 0x68747541;
  vendor.edx = 0x69746e65;
  vendor.eax = 0x10;
  CpuTemplate t;
  t.cpuid_modifiers = {Modifier(0, 0, 1, ~0u, 0x756e6547), Modifier(0, 0, 0, ~0u, 0xd)};
  absl::StatusOr<CpuidEntries> out = ApplyCpuidTemplate({vendor}, t);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].ebx, 0x68747541u) << "AuthenticAMD stays";
  EXPECT_EQ((*out)[0].eax, 0xdu) << "the highest leaf may change";
}

TEST(CpuTemplateTest, ALeafKvmLacksIsRefused) {
  CpuTemplate t;
  t.cpuid_modifiers = {Modifier(0x40000010, 0, 0, 1, 1)};
  absl::StatusOr<CpuidEntries> out = ApplyCpuidTemplate({Leaf(1, 0, 0)}, t);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("leaf 0x40000010 subleaf 0 is not one KVM supports"),
            std::string::npos)
      << out.status();
}

// With /dev/kvm: the MSR modifiers start from what the vCPU has and land
// in it; a capability the host lacks, or one Ember needs, is refused.
TEST(CpuTemplateTest, MsrsAndCapabilitiesOnARealVcpu) {
  absl::StatusOr<Kvm> kvm = Kvm::Open();
  if (!kvm.ok()) GTEST_SKIP() << kvm.status();
  absl::StatusOr<VmFd> vm = kvm->CreateVm();
  ASSERT_TRUE(vm.ok()) << vm.status();
  absl::StatusOr<VcpuFd> vcpu = vm->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  absl::StatusOr<CpuidEntries> supported = kvm->SupportedCpuid();
  ASSERT_TRUE(supported.ok());
  ASSERT_TRUE(vcpu->SetCpuid(FilterCpuid(*supported, 0, 1)).ok());

  constexpr uint32_t kSysenterCs = 0x174;
  CpuTemplate t;
  // Two modifiers of one MSR apply one after the other.
  t.msr_modifiers = {{kSysenterCs, {0xff, 0x5a}}, {kSysenterCs, {0x0f, 0x03}}};
  absl::StatusOr<std::vector<kvm_msr_entry>> msrs = TemplateMsrs(vcpu->fd(), t);
  ASSERT_TRUE(msrs.ok()) << msrs.status();
  ASSERT_TRUE(SetTemplateMsrs(*vcpu, *msrs).ok());
  absl::StatusOr<std::vector<kvm_msr_entry>> back = ReadMsrs(vcpu->fd(), {kSysenterCs});
  ASSERT_TRUE(back.ok() && back->size() == 1);
  EXPECT_EQ((*back)[0].data & 0xff, 0x53u);

  t.msr_modifiers = {{0xdeadbeef, {1, 1}}};
  EXPECT_NE(TemplateMsrs(vcpu->fd(), t).status().message().find("MSR 0xdeadbeef"),
            std::string::npos);

  t = {};
  t.kvm_capabilities = {{KVM_CAP_IRQCHIP, true}};
  EXPECT_NE(CheckKvmCapabilities(*kvm, t).message().find("cannot run without KVM_CAP_IRQCHIP"),
            std::string::npos);
  t.kvm_capabilities = {{KVM_CAP_IRQCHIP, false}, {0x7fffffff, true}};
  EXPECT_TRUE(CheckKvmCapabilities(*kvm, t).ok()) << "what Ember never checks: nothing to drop";
  t.kvm_capabilities = {{0x7fffffff, false}};
  EXPECT_NE(CheckKvmCapabilities(*kvm, t).message().find("lacks capability 2147483647"),
            std::string::npos);
}

}  // namespace
}  // namespace ember::x86_64
