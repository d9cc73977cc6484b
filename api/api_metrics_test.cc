#include "api/api_metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "api/router.h"

namespace ember::api {
namespace {

// A group's values by name.
std::map<std::string, uint64_t> Values(Metrics& m, const char* group) {
  std::map<std::string, uint64_t> out;
  for (const auto& [name, value] : m.Group(group).counts) out[name] = value;
  for (const auto& [name, value] : m.Group(group).levels) out[name] = value;
  return out;
}

TEST(ApiMetricsTest, EveryServedRouteHasItsCounter) {
  for (const auto& [pattern, methods] : ServedRoutes()) {
    std::string path = absl::StrReplaceAll(
        pattern, {{"{drive_id}", "rootfs"}, {"{iface_id}", "eth0"}, {"{id}", "x"}});
    for (const std::string& method : methods) {
      std::optional<RouteCounter> c = FindRouteCounter(method, path);
      ASSERT_TRUE(c.has_value()) << method << " " << pattern;
      EXPECT_EQ(std::string(c->group), absl::AsciiStrToLower(method) + "_api_requests");
    }
  }
  EXPECT_FALSE(FindRouteCounter("PUT", "/drives").has_value()) << "the id is needed";
  EXPECT_FALSE(FindRouteCounter("PUT", "/drives/a/b").has_value());
  EXPECT_FALSE(FindRouteCounter("DELETE", "/drives/a").has_value());
}

TEST(ApiMetricsTest, CountsEachRouteAndItsFails) {
  ApiMetrics api;
  api.Count({"PUT", "/drives/rootfs", "{}"}, {204, ""}, 5);
  api.Count({"PUT", "/drives/rootfs", "{}"}, {400, "{}"}, 5);
  api.Count({"GET", "/?x=1", ""}, {200, "{}"}, 5);
  api.Count({"GET", "/nowhere", ""}, {400, "{}"}, 5);
  api.Count({"PUT", "/mmds", "{}"}, {400, "{}"}, 5);
  api.Count({"PUT", "/mmds/config", "{}"}, {400, "{}"}, 5);
  HttpResponse deprecated{204, ""};
  deprecated.deprecated = true;
  api.Count({"PUT", "/vsock", R"({"vsock_id": "v"})"}, deprecated, 5);
  Metrics m;
  api.AppendTo(&m);
  auto put = Values(m, "put_api_requests");
  EXPECT_EQ(put["drive_count"], 2u);
  EXPECT_EQ(put["drive_fails"], 1u);
  EXPECT_EQ(put["mmds_count"], 2u) << "PUT /mmds and /mmds/config share it";
  EXPECT_EQ(put["actions_count"], 0u);
  EXPECT_EQ(Values(m, "get_api_requests")["instance_info_count"], 1u);
  auto server = Values(m, "api_server");
  EXPECT_EQ(server["requests"], 7u);
  EXPECT_EQ(server["faults"], 4u);
  EXPECT_EQ(Values(m, "deprecated_api")["deprecated_http_api_calls"], 1u);
  EXPECT_EQ(put["vsock_count"], 1u);
}

TEST(ApiMetricsTest, ARequestCountsBeforeItsAnswer) {
  // The line PUT /actions FlushMetrics writes is written before the
  // answer; it must count that request, as Firecracker's does.
  ApiMetrics api;
  HttpRequest flush{"PUT", "/actions", R"({"action_type": "FlushMetrics"})"};
  api.Arrived(flush);
  Metrics m;
  api.AppendTo(&m);
  EXPECT_EQ(Values(m, "put_api_requests")["actions_count"], 1u);
  EXPECT_EQ(Values(m, "api_server")["requests"], 1u);
  api.Answered(flush, {204, ""}, 5);
  Metrics after;
  api.AppendTo(&after);
  EXPECT_EQ(Values(after, "put_api_requests")["actions_count"], 1u) << "counted once";
  EXPECT_EQ(Values(after, "put_api_requests")["actions_fails"], 0u);
}

TEST(ApiMetricsTest, LatenciesOfWhatSucceeded) {
  ApiMetrics api;
  api.SetStartupTimes(1500, 900);
  api.Count({"PATCH", "/vm", R"({"state": "Paused"})"}, {204, ""}, 111);
  api.Count({"PATCH", "/vm", R"({"state": "Resumed"})"}, {204, ""}, 222);
  api.Count({"PUT", "/snapshot/create", R"({"snapshot_type": "Diff"})"}, {204, ""}, 333);
  api.Count({"PUT", "/snapshot/create", R"({"snapshot_path": "s"})"}, {204, ""}, 444);
  api.Count({"PUT", "/snapshot/load", "{}"}, {400, "{}"}, 555);
  Metrics m;
  api.AppendTo(&m);
  auto l = Values(m, "latencies_us");
  EXPECT_EQ(l["pause_vm"], 111u);
  EXPECT_EQ(l["resume_vm"], 222u);
  EXPECT_EQ(l["diff_create_snapshot"], 333u);
  EXPECT_EQ(l["full_create_snapshot"], 444u);
  EXPECT_EQ(l["load_snapshot"], 0u) << "a refused load took nothing";
  auto server = Values(m, "api_server");
  EXPECT_EQ(server["process_startup_time_us"], 1500u);
  EXPECT_EQ(server["process_startup_time_cpu_us"], 900u);
}

}  // namespace
}  // namespace ember::api
