#include "api/metrics_json.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include "api/vm_config_json.h"

namespace ember::api {
namespace {

TEST(MetricsJsonTest, OneObjectWithEveryDevice) {
  Metrics m;
  m.utc_timestamp_ms = 1700000000123;
  m.api_requests = 7;
  m.api_faults = 2;
  m.vm_state = "Running";
  m.devices.push_back({"block_rootfs", {{"read_count", 10}, {"backend_errors", 1}}});
  m.devices.push_back({"net_eth0", {{"rx_packets", 3}}});
  std::string line = MetricsToJson(m);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line";
  rapidjson::Document d;
  d.Parse(line.c_str());
  ASSERT_FALSE(d.HasParseError());
  EXPECT_EQ(d["utc_timestamp_ms"].GetUint64(), 1700000000123u);
  EXPECT_EQ(d["api_server"]["requests"].GetUint64(), 7u);
  EXPECT_EQ(d["api_server"]["faults"].GetUint64(), 2u);
  EXPECT_STREQ(d["vm"]["state"].GetString(), "Running");
  EXPECT_EQ(d["block_rootfs"]["backend_errors"].GetUint64(), 1u);
  EXPECT_EQ(d["net_eth0"]["rx_packets"].GetUint64(), 3u);
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
