#include "api/cpu_config_json.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "api/vm_config_json.h"
#include "src/common/json_reader.h"

namespace ember::api {
namespace {

// Firecracker's documented x86_64 example, with a short bitmap and '_'.
constexpr char kExample[] = R"({
  "kvm_capabilities": ["!56", "121"],
  "cpuid_modifiers": [{
    "leaf": "0x1", "subleaf": "0x0", "flags": 0,
    "modifiers": [{"register": "eax", "bitmap": "0bxxxx000000000011xx00011011110010"},
                  {"register": "edx", "bitmap": "0b1_0x"}]
  }],
  "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b0000000000000000000000000000000000000000000000000000000000000000"}]
})";

absl::StatusOr<CpuTemplate> Parse(const std::string& json) {
  rapidjson::Document doc;
  absl::Status st = ParseJsonObject(json, &doc);
  if (!st.ok()) return st;
  return ParseCpuConfig(doc);
}

void ExpectRefused(const std::string& json, const std::string& needle) {
  absl::StatusOr<CpuTemplate> t = Parse(json);
  ASSERT_FALSE(t.ok()) << json;
  EXPECT_NE(t.status().message().find(needle), std::string::npos)
      << t.status() << " lacks " << needle;
}

TEST(CpuConfigJsonTest, ParsesFirecrackersExample) {
  absl::StatusOr<CpuTemplate> t = Parse(kExample);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->kvm_capabilities.size(), 2u);
  EXPECT_EQ(t->kvm_capabilities[0], (KvmCapabilityModifier{56, true}));
  EXPECT_EQ(t->kvm_capabilities[1], (KvmCapabilityModifier{121, false}));
  ASSERT_EQ(t->cpuid_modifiers.size(), 1u);
  const CpuidLeafModifier& leaf = t->cpuid_modifiers[0];
  EXPECT_EQ(leaf.leaf, 1u);
  ASSERT_EQ(leaf.registers.size(), 2u);
  EXPECT_EQ(leaf.registers[0].reg, 0);
  EXPECT_EQ(leaf.registers[0].bits.filter, 0b00001111111111110011111111111111u);
  EXPECT_EQ(leaf.registers[0].bits.value, 0b00000000000000110000011011110010u);
  // "0b1_0x": bit 0 kept, bit 1 cleared, bit 2 set, the 29 missing ones kept.
  EXPECT_EQ(leaf.registers[1].reg, 3);
  EXPECT_EQ(leaf.registers[1].bits.filter, 0b110u);
  EXPECT_EQ(leaf.registers[1].bits.value, 0b100u);
  ASSERT_EQ(t->msr_modifiers.size(), 1u);
  EXPECT_EQ(t->msr_modifiers[0].addr, 0x10au);
  EXPECT_EQ(t->msr_modifiers[0].bits.filter, ~uint64_t{0});
  EXPECT_EQ(t->msr_modifiers[0].bits.Apply(0x1234), 0u);
}

TEST(CpuConfigJsonTest, NumbersInHexBinaryOrDecimal) {
  absl::StatusOr<CpuTemplate> t = Parse(R"({"cpuid_modifiers": [
      {"leaf": "0b111", "subleaf": "12", "flags": 1, "modifiers": []}],
      "msr_modifiers": [{"addr": "3221225731", "bitmap": "0b1"}]})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->cpuid_modifiers[0].leaf, 7u);
  EXPECT_EQ(t->cpuid_modifiers[0].subleaf, 12u);
  EXPECT_EQ(t->msr_modifiers[0].addr, 0xc0000103u);
}

TEST(CpuConfigJsonTest, WritesWhatItReads) {
  absl::StatusOr<CpuTemplate> t = Parse(kExample);
  ASSERT_TRUE(t.ok()) << t.status();
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  WriteCpuConfig(w, *t);
  std::string json = buf.GetString();
  EXPECT_NE(json.find(R"("leaf":"0x1","subleaf":"0x0","flags":0)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxx10x")"), std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("kvm_capabilities":["!56","121"])"), std::string::npos) << json;
  absl::StatusOr<CpuTemplate> again = Parse(json);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *t);
}

TEST(CpuConfigJsonTest, BadTemplatesAreRefusedByField) {
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "1", "subleaf": "0", "flags": 0,
                   "modifiers": [{"register": "rax", "bitmap": "0b1"}]}]})",
                "cpu-config.cpuid_modifiers[0].modifiers[0].register 'rax' must be one of eax");
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "1", "subleaf": "0", "flags": 0,
                   "modifiers": [{"register": "eax", "bitmap": "0b102"}]}]})",
                "may hold only '0', '1', 'x'");
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "1", "subleaf": "0", "flags": 0, "modifiers":
                   [{"register": "eax", "bitmap": "0b111111111111111111111111111111111"}]}]})",
                "has more than 32 bits");
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "0xg", "subleaf": "0", "flags": 0,
                   "modifiers": []}]})",
                "cpu-config.cpuid_modifiers[0].leaf '0xg' must be a 32-bit number");
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "0x100000000", "subleaf": "0", "flags": 0,
                   "modifiers": []}]})",
                "must be a 32-bit number");
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "1", "subleaf": "0", "flags": 0}]})",
                "cpu-config.cpuid_modifiers[0].modifiers is required");
  ExpectRefused(R"({"cpuid_modifiers": [{"leaf": "1", "flags": 0, "modifiers": []}]})",
                "subleaf is required");
  // Firecracker's modifiers ignore fields they do not know; the template
  // itself does not.
  EXPECT_TRUE(Parse(R"({"msr_modifiers": [{"addr": "0x10a", "bitmap": "0b1", "x": 1}]})").ok());
  ExpectRefused(R"({"kvm_capabilities": ["!x"]})", "cpu-config.kvm_capabilities[0] must be");
  ExpectRefused(R"({"kvm_capabilities": [56]})", "cpu-config.kvm_capabilities[0] must be");
  ExpectRefused(R"({"kvm_capabilities": ["99999999999"]})", "kvm_capabilities[0] must be");
  ExpectRefused(R"({"cpuid_modifiers": {}})", "cpu-config.cpuid_modifiers must be an array");
  ExpectRefused(R"({"reg_modifiers": [{"addr": "0x1", "bitmap": "0b1"}]})", "aarch64");
  ExpectRefused(R"({"cpuid": []})", "unknown field 'cpuid'");
  // Numbers: the digits of their base and nothing else.
  for (const char* leaf : {"0x0x1f", " 1", "+1", "0b12", "1a", "0x", ""}) {
    ExpectRefused(absl::StrCat(R"({"cpuid_modifiers": [{"leaf": ")", leaf,
                               R"(", "subleaf": "0", "flags": 0, "modifiers": []}]})"),
                  "must be a 32-bit number");
  }
  // Nothing may follow the 32nd bit, not even '_' (Firecracker's rule).
  ExpectRefused(absl::StrCat(R"({"cpuid_modifiers": [{"leaf": "1", "subleaf": "0", "flags": 0,
                   "modifiers": [{"register": "eax", "bitmap": "0b_)",
                             std::string(32, '1'), R"("}]}]})"),
                "has more than 32 bits");
  std::string many = R"({"msr_modifiers": [)";
  for (int i = 0; i < 256; i++) {
    absl::StrAppend(&many, i ? "," : "", R"({"addr": ")", i, R"(", "bitmap": "0b1"})");
  }
  ExpectRefused(many + "]}", "cpu-config.msr_modifiers: at most 255");
}

TEST(CpuConfigJsonTest, TheConfigFileTakesItInlineOrFromAFile) {
  std::string path = ::testing::TempDir() + "/template.json." + std::to_string(getpid());
  std::ofstream(path) << kExample;
  for (const std::string& section : {std::string(kExample), "\"" + path + "\""}) {
    auto c = ParseVmConfig(R"({"boot-source": {"kernel_image_path": "/k"}, "cpu-config": )" +
                           section + "}");
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE(c->cpu_config);
    EXPECT_EQ(c->cpu_config->msr_modifiers[0].addr, 0x10au);
    // Written back whole, so a snapshot's configuration keeps it.
    auto again = ParseVmConfig(VmConfigToJson(*c));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->cpu_config, c->cpu_config);
  }
  // Neither a missing file nor one read without end (or waited on) is taken.
  std::string fifo = ::testing::TempDir() + "/template.fifo." + std::to_string(getpid());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& bad : {std::string("/nonexistent.json"), std::string("/dev/zero"), fifo}) {
    auto refused = ParseVmConfig(
        R"({"boot-source": {"kernel_image_path": "/k"}, "cpu-config": ")" + bad + "\"}");
    EXPECT_NE(refused.status().message().find(bad + " is not a readable CPU template"),
              std::string::npos)
        << refused.status();
  }
  std::remove(fifo.c_str());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ember::api
