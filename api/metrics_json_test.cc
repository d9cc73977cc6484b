#include "api/metrics_json.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <string>
#include <vector>

#include "api/metrics_schema.h"
#include "api/vm_config_json.h"

namespace ember::api {
namespace {

rapidjson::Document Parse(const std::string& line) {
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line";
  rapidjson::Document d;
  d.Parse(line.c_str());
  EXPECT_FALSE(d.HasParseError()) << line;
  EXPECT_TRUE(d.IsObject());
  return d;
}

// metrics.emit_id and metrics.properties: right after the time, as in
// Firecracker; a fatal signal's line has the same labels.
TEST(MetricsJsonTest, TheIdAndPropertiesFollowTheTime) {
  Metrics m;
  m.id = "vm-1";
  m.properties = std::map<std::string, std::string>{{"b", "2"}, {"a", "\"q\""}};
  MetricsWriter writer;
  std::string line = writer.Line(m);
  EXPECT_EQ(line.rfind(R"({"utc_timestamp_ms":0,"id":"vm-1","properties":{"a":"\"q\"","b":"2"},)", 0),
            0u)
      << line;
  EXPECT_EQ(MetricsLabels(m.id, m.properties), R"("id":"vm-1","properties":{"a":"\"q\"","b":"2"})");
  EXPECT_EQ(MetricsLabels(std::nullopt, std::nullopt), "");
  Parse(line);
}

TEST(MetricsJsonTest, EveryFirecrackerGroupAndFieldEvenWithNothingReported) {
  Metrics m;
  m.utc_timestamp_ms = 1700000000123;
  m.vm_state = "Not started";
  MetricsWriter writer;
  rapidjson::Document d = Parse(writer.Line(m));
  EXPECT_EQ(d["utc_timestamp_ms"].GetUint64(), 1700000000123u);
  // Firecracker's order, and Ember's own group last.
  std::vector<std::string> keys;
  for (const auto& member : d.GetObject()) keys.push_back(member.name.GetString());
  std::vector<std::string> want = {"utc_timestamp_ms"};
  for (const MetricGroupSpec& g : FirecrackerMetricGroups()) want.push_back(g.name);
  want.push_back("ember");
  EXPECT_EQ(keys, want);
  for (const MetricGroupSpec& g : FirecrackerMetricGroups()) {
    const rapidjson::Value& group = d[g.name];
    ASSERT_TRUE(group.IsObject()) << g.name;
    EXPECT_EQ(group.MemberCount(), g.fields.size()) << g.name;
    for (const MetricField& f : g.fields) {
      ASSERT_TRUE(group.HasMember(f.name)) << g.name << "." << f.name;
      const rapidjson::Value& v = group[f.name];
      if (f.kind == MetricKind::kLatency) {
        for (const char* part : {"min_us", "max_us", "sum_us"}) {
          EXPECT_TRUE(v[part].IsUint64()) << g.name << "." << f.name << "." << part;
        }
      } else {
        EXPECT_TRUE(v.IsUint64() && v.GetUint64() == 0) << g.name << "." << f.name;
      }
    }
  }
  EXPECT_STREQ(d["ember"]["vm_state"].GetString(), "Not started");
  EXPECT_FALSE(d.HasMember("rtc")) << "Firecracker has it on aarch64 only";
}

TEST(MetricsJsonTest, CountsAreChangesSinceTheLastLineAndLevelsAreAsTheyAre) {
  MetricsWriter writer;
  auto line = [&](uint64_t exits, uint64_t pause_us) {
    Metrics m;
    MetricGroup& vcpu = m.Group("vcpu");
    vcpu.counts = {{"exit_io_in", exits}, {"exit_io_in_agg.sum_us", exits * 2}};
    vcpu.levels = {{"exit_io_in_agg.min_us", 1}, {"exit_io_in_agg.max_us", 9}};
    m.Group("latencies_us").levels = {{"vmm_pause_vm", pause_us}};
    return Parse(writer.Line(m));
  };
  rapidjson::Document first = line(10, 70);
  EXPECT_EQ(first["vcpu"]["exit_io_in"].GetUint64(), 10u);
  EXPECT_EQ(first["vcpu"]["exit_io_in_agg"]["sum_us"].GetUint64(), 20u);
  rapidjson::Document second = line(15, 70);
  EXPECT_EQ(second["vcpu"]["exit_io_in"].GetUint64(), 5u);
  EXPECT_EQ(second["vcpu"]["exit_io_in_agg"]["sum_us"].GetUint64(), 10u);
  EXPECT_EQ(second["vcpu"]["exit_io_in_agg"]["min_us"].GetUint64(), 1u);
  EXPECT_EQ(second["vcpu"]["exit_io_in_agg"]["max_us"].GetUint64(), 9u);
  EXPECT_EQ(second["latencies_us"]["vmm_pause_vm"].GetUint64(), 70u);
  rapidjson::Document same = line(15, 70);
  EXPECT_EQ(same["vcpu"]["exit_io_in"].GetUint64(), 0u);
  // A VM restored from a snapshot counts from 0 again: its total is new.
  rapidjson::Document restarted = line(3, 70);
  EXPECT_EQ(restarted["vcpu"]["exit_io_in"].GetUint64(), 3u);
}

TEST(MetricsJsonTest, FirecrackersKindWinsOverTheReporters) {
  MetricsWriter writer;
  Metrics m;
  m.Group("uart").levels = {{"write_count", 4}};  // a count in Firecracker
  EXPECT_EQ(Parse(writer.Line(m))["uart"]["write_count"].GetUint64(), 4u);
  EXPECT_EQ(Parse(writer.Line(m))["uart"]["write_count"].GetUint64(), 0u);
}

TEST(MetricsJsonTest, EachDevicesGroupAndTheirSum) {
  Metrics m;
  MetricGroup& a = m.Group("block_rootfs");
  a.counts = {{"read_bytes", 100}, {"read_agg.sum_us", 30}, {"queue_errors", 1}};
  a.levels = {{"read_agg.min_us", 2}, {"read_agg.max_us", 20}};
  m.Group("block_data").counts = {{"read_bytes", 50}, {"queue_errors", 2}};
  MetricsWriter writer;
  rapidjson::Document d = Parse(writer.Line(m));
  EXPECT_EQ(d["block_rootfs"]["read_bytes"].GetUint64(), 100u);
  EXPECT_EQ(d["block_rootfs"]["read_agg"]["max_us"].GetUint64(), 20u);
  EXPECT_EQ(d["block_rootfs"]["write_count"].GetUint64(), 0u) << "every field, per device too";
  EXPECT_EQ(d["block_data"]["read_bytes"].GetUint64(), 50u);
  EXPECT_EQ(d["block"]["read_bytes"].GetUint64(), 150u);
  EXPECT_EQ(d["block"]["queue_errors"].GetUint64(), 3u) << "Ember's counts add up too";
  EXPECT_EQ(d["block"]["read_agg"]["sum_us"].GetUint64(), 30u);
  EXPECT_EQ(d["block"]["read_agg"]["max_us"].GetUint64(), 0u) << "as Firecracker's sum";
  // Devices come before their sum, as Firecracker writes them.
  std::vector<std::string> keys;
  for (const auto& member : d.GetObject()) keys.push_back(member.name.GetString());
  auto at = [&](const char* k) { return std::find(keys.begin(), keys.end(), k) - keys.begin(); };
  EXPECT_LT(at("block_rootfs"), at("block"));
  EXPECT_LT(at("block_data"), at("block"));
  EXPECT_TRUE(d["net"].IsObject()) << "no interface: the sum is there, all 0";
  EXPECT_EQ(d["net"]["rx_bytes_count"].GetUint64(), 0u);
}

TEST(MetricsJsonTest, EmbersOwnCountersFollowFirecrackersInTheirGroup) {
  Metrics m;
  m.vm_state = "Running";
  MetricGroup& balloon = m.Group("balloon");
  balloon.counts = {{"inflate_count", 2}, {"inflated_pages", 512}};
  balloon.levels = {{"target_pages", 8192}};
  m.Group("ember").counts = {{"restarts", 1}};
  MetricsWriter writer;
  (void)writer.Line(m);
  rapidjson::Document d = Parse(writer.Line(m));
  const rapidjson::Value& b = d["balloon"];
  EXPECT_EQ(b["inflate_count"].GetUint64(), 0u);
  EXPECT_EQ(b["inflated_pages"].GetUint64(), 0u);
  EXPECT_EQ(b["target_pages"].GetUint64(), 8192u) << "a level stays";
  std::vector<std::string> keys;
  for (const auto& member : b.GetObject()) keys.push_back(member.name.GetString());
  EXPECT_EQ(keys.front(), "activate_fails");
  EXPECT_EQ(keys[keys.size() - 2], "inflated_pages");
  EXPECT_EQ(keys.back(), "target_pages");
  EXPECT_STREQ(d["ember"]["vm_state"].GetString(), "Running");
  EXPECT_EQ(d["ember"]["restarts"].GetUint64(), 0u);
}

TEST(MetricsJsonTest, KataReadsFieldsFirecrackerHasSinceDropped) {
  rapidjson::Document d = Parse(MetricsWriter().Line(Metrics{}));
  EXPECT_TRUE(d["api_server"]["sync_response_fails"].IsUint64());
  EXPECT_TRUE(d["get_api_requests"]["instance_info_fails"].IsUint64());
  EXPECT_TRUE(d["logger"]["log_fails"].IsUint64());
  EXPECT_TRUE(d["net"]["tx_partial_reads"].IsUint64());
  EXPECT_TRUE(d["vcpu"]["filter_cpuid"].IsUint64());
  EXPECT_TRUE(d["vmm"]["device_events"].IsUint64());
}

TEST(MetricsJsonTest, ConfigSection) {
  auto c = ParseVmConfig(R"({"boot-source": {"kernel_image_path": "/k"},
                             "metrics": {"metrics_path": "/tmp/m"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics->metrics_path, "/tmp/m");
  auto bad = ParseVmConfig(R"({"boot-source": {"kernel_image_path": "/k"}, "metrics": {}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("metrics.metrics_path is required"), std::string::npos);
}

}  // namespace
}  // namespace ember::api
