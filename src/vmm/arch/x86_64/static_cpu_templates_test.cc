// The static templates as data (what they hide on a CPU that has it all)
// and the host models each is taken on.
#include "src/vmm/arch/x86_64/static_cpu_templates.h"

#include <gtest/gtest.h>

#include "src/vmm/arch/x86_64/cpu_template.h"

namespace ember::x86_64 {
namespace {

constexpr StaticCpuTemplate kAll[] = {StaticCpuTemplate::kC3, StaticCpuTemplate::kT2,
                                      StaticCpuTemplate::kT2S, StaticCpuTemplate::kT2CL,
                                      StaticCpuTemplate::kT2A};

constexpr uint32_t kSkylake = 0x50654, kCascadeLake = 0x50657, kIceLake = 0x606a6,
                   kMilan = 0xa00f11, kTurin = 0xb00f21;

// Every leaf the templates touch, with every feature bit set.
CpuidEntries EverythingCpu() {
  CpuidEntries out;
  for (auto [fn, index] : {std::pair<uint32_t, uint32_t>{0, 0}, {1, 0}, {7, 0}, {0xd, 0},
                           {0xd, 1}, {0x80000001, 0}, {0x80000008, 0}}) {
    kvm_cpuid_entry2 e = {};
    e.function = fn;
    e.index = index;
    e.eax = e.ebx = e.ecx = e.edx = ~0u;
    out.push_back(e);
  }
  return out;
}

const kvm_cpuid_entry2& Find(const CpuidEntries& cpuid, uint32_t fn, uint32_t index = 0) {
  for (const kvm_cpuid_entry2& e : cpuid) {
    if (e.function == fn && e.index == index) return e;
  }
  ADD_FAILURE() << "no leaf " << fn;
  return cpuid[0];
}

CpuidEntries Applied(StaticCpuTemplate t) {
  absl::StatusOr<CpuidEntries> out = ApplyCpuidTemplate(EverythingCpu(), StaticTemplate(t));
  EXPECT_TRUE(out.ok()) << StaticCpuTemplateName(t) << ": " << out.status();
  return out.ok() ? *out : CpuidEntries{};
}

bool Bit(uint32_t reg, int bit) { return reg & (1u << bit); }

TEST(StaticCpuTemplateTest, EachHidesWhatItsInstanceTypesCpuLacks) {
  for (StaticCpuTemplate t : kAll) {
    SCOPED_TRACE(StaticCpuTemplateName(t));
    CpuidEntries cpuid = Applied(t);
    EXPECT_FALSE(Bit(Find(cpuid, 1).ecx, 5)) << "VMX";
    EXPECT_FALSE(Bit(Find(cpuid, 7).ebx, 16)) << "AVX512F";
    EXPECT_FALSE(Bit(Find(cpuid, 7).ebx, 2)) << "SGX";
    EXPECT_TRUE(Bit(Find(cpuid, 1).ecx, 28)) << "AVX stays";
    EXPECT_TRUE(Bit(Find(cpuid, 1).edx, 7) && Bit(Find(cpuid, 1).edx, 12)) << "MCE, MTRR forced";
    EXPECT_EQ(Find(cpuid, 0).ebx, ~0u) << "the vendor is the host's";
  }
  // C3 is Ivy Bridge: no AVX2 or BMI; T2's Haswell has them.
  EXPECT_FALSE(Bit(Find(Applied(StaticCpuTemplate::kC3), 7).ebx, 5));
  EXPECT_TRUE(Bit(Find(Applied(StaticCpuTemplate::kT2), 7).ebx, 5));
  EXPECT_EQ(Find(Applied(StaticCpuTemplate::kC3), 1).eax & 0x0fff0fff, 0x306e4u);
  EXPECT_EQ(Find(Applied(StaticCpuTemplate::kT2), 1).eax & 0x0fff0fff, 0x306f2u);
  // T2A shows a Milan with what Intel's parts of T2CL leave: same leaf 7.
  EXPECT_EQ(Find(Applied(StaticCpuTemplate::kT2A), 7).ebx,
            Find(Applied(StaticCpuTemplate::kT2CL), 7).ebx);
}

TEST(StaticCpuTemplateTest, OnlyT2sAndT2clTouchArchCapabilities) {
  for (StaticCpuTemplate t : kAll) {
    CpuTemplate tmpl = StaticTemplate(t);
    bool msr = t == StaticCpuTemplate::kT2S || t == StaticCpuTemplate::kT2CL;
    ASSERT_EQ(tmpl.msr_modifiers.size(), msr ? 1u : 0u) << StaticCpuTemplateName(t);
    if (msr) {
      EXPECT_EQ(tmpl.msr_modifiers[0].addr, 0x10au);
    }
    EXPECT_TRUE(tmpl.kvm_capabilities.empty());
  }
  // T2S: one value on every host; T2CL keeps the host's mitigation bits.
  EXPECT_EQ(StaticTemplate(StaticCpuTemplate::kT2S).msr_modifiers[0].bits.Apply(~0ull),
            0x0c0a0c4cull);
  EXPECT_EQ(StaticTemplate(StaticCpuTemplate::kT2CL).msr_modifiers[0].bits.Apply(0x1ull), 0x1ull)
      << "RDCL_NO passes through";
  EXPECT_TRUE(StaticTemplate(StaticCpuTemplate::kNone) == CpuTemplate{});
}

TEST(StaticCpuTemplateTest, EachIsTakenOnlyOnTheModelsItWasMadeFor) {
  auto ok = [](StaticCpuTemplate t, const char* vendor, uint32_t sig) {
    return CheckStaticTemplateHost(t, CpuModel{vendor, sig}).ok();
  };
  EXPECT_TRUE(ok(StaticCpuTemplate::kT2, "GenuineIntel", kSkylake));
  EXPECT_TRUE(ok(StaticCpuTemplate::kC3, "GenuineIntel", kIceLake));
  EXPECT_TRUE(ok(StaticCpuTemplate::kT2S, "GenuineIntel", kCascadeLake));
  EXPECT_FALSE(ok(StaticCpuTemplate::kT2S, "GenuineIntel", kIceLake));
  EXPECT_FALSE(ok(StaticCpuTemplate::kT2CL, "GenuineIntel", kSkylake));
  EXPECT_TRUE(ok(StaticCpuTemplate::kT2A, "AuthenticAMD", kMilan));
  EXPECT_FALSE(ok(StaticCpuTemplate::kT2A, "GenuineIntel", kMilan)) << "the vendor counts";
  EXPECT_FALSE(ok(StaticCpuTemplate::kT2, "AuthenticAMD", kMilan));
  EXPECT_FALSE(ok(StaticCpuTemplate::kT2, "GenuineIntel", kSkylake + 1)) << "the stepping counts";

  absl::Status turin = CheckStaticTemplateHost(StaticCpuTemplate::kT2A,
                                               CpuModel{"AuthenticAMD", kTurin});
  EXPECT_NE(turin.message().find("\"T2A\" is made for Milan (AuthenticAMD family 0x19 model 0x1 "
                                 "stepping 1) only; this host is AuthenticAMD family 0x1a model "
                                 "0x2 stepping 1"),
            std::string::npos)
      << turin;
  absl::Status amd = CheckStaticTemplateHost(StaticCpuTemplate::kT2, CpuModel{"AuthenticAMD",
                                                                               kTurin});
  EXPECT_NE(amd.message().find("Skylake (GenuineIntel family 0x6 model 0x55 stepping 4), "
                               "Cascade Lake"),
            std::string::npos)
      << amd;
}

// What the VM's vCPUs get: the template, on a host it was made for only.
TEST(StaticCpuTemplateTest, AVmGetsTheTemplateOnlyOnItsHosts) {
  absl::StatusOr<CpuTemplate> milan =
      StaticTemplateFor(StaticCpuTemplate::kT2A, CpuModel{"AuthenticAMD", kMilan});
  ASSERT_TRUE(milan.ok()) << milan.status();
  EXPECT_TRUE(*milan == StaticTemplate(StaticCpuTemplate::kT2A));
  EXPECT_FALSE(StaticTemplateFor(StaticCpuTemplate::kT2A, CpuModel{"AuthenticAMD", kTurin}).ok());
  EXPECT_TRUE(StaticTemplateFor(StaticCpuTemplate::kC3, CpuModel{"GenuineIntel", kSkylake}).ok())
      << "with a warning only";
}

TEST(StaticCpuTemplateTest, TheSignatureLeavesOutTheProcessorTypeAndReservedBits) {
  // A Cascade Lake with processor type 1 and reserved bits set.
  EXPECT_EQ(SignatureOf(0xf0051657u | 0x3000u), kCascadeLake);
  EXPECT_TRUE(CheckStaticTemplateHost(StaticCpuTemplate::kT2CL,
                                      CpuModel{"GenuineIntel", SignatureOf(0x00051657u)})
                  .ok());
  EXPECT_EQ(HostCpuModel().vendor.size(), 12u);
}

}  // namespace
}  // namespace ember::x86_64
