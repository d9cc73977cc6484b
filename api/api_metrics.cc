#include "api/api_metrics.h"

#include <rapidjson/document.h>

#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/router.h"

namespace ember::api {
namespace {

struct RouteName {
  const char* method;
  const char* path;
  const char* name;
  bool takes_id = false;  // "/drives/{drive_id}"
};

// Firecracker's names where it counts the route; the rest (marked) are
// Ember's, in the same pattern.
constexpr RouteName kRoutes[] = {
    {"GET", "/", "instance_info"},
    {"GET", "/version", "vmm_version"},
    {"GET", "/machine-config", "machine_cfg"},
    {"GET", "/mmds", "mmds"},
    {"GET", "/hotplug/memory", "hotplug_memory"},
    {"GET", "/vm/config", "vm_config"},                    // Ember's
    {"GET", "/balloon", "balloon"},                        // Ember's
    {"GET", "/balloon/statistics", "balloon_statistics"},  // Ember's
    {"GET", "/balloon/hinting/status", "balloon_hinting"},  // Ember's
    {"PUT", "/actions", "actions"},
    {"PUT", "/boot-source", "boot_source"},
    {"PUT", "/drives", "drive", true},
    {"PUT", "/logger", "logger"},
    {"PUT", "/machine-config", "machine_cfg"},
    {"PUT", "/cpu-config", "cpu_cfg"},
    {"PUT", "/metrics", "metrics"},
    {"PUT", "/network-interfaces", "network", true},
    {"PUT", "/mmds", "mmds"},
    {"PUT", "/mmds/config", "mmds"},
    {"PUT", "/vsock", "vsock"},
    {"PUT", "/pmem", "pmem", true},
    {"PUT", "/serial", "serial"},
    {"PUT", "/hotplug/memory", "hotplug_memory"},
    {"PUT", "/balloon", "balloon"},                  // Ember's
    {"PUT", "/entropy", "entropy"},                  // Ember's
    {"PUT", "/snapshot/create", "snapshot_create"},  // Ember's
    {"PUT", "/snapshot/load", "snapshot_load"},      // Ember's
    {"PUT", "/snapshot/working-set", "snapshot_working_set"},  // Ember's
    {"PATCH", "/drives", "drive", true},
    {"PATCH", "/network-interfaces", "network", true},
    {"PATCH", "/machine-config", "machine_cfg"},
    {"PATCH", "/mmds", "mmds"},
    {"PATCH", "/hotplug/memory", "hotplug_memory"},
    {"PATCH", "/pmem", "pmem", true},
    {"PATCH", "/vm", "vm"},                                // Ember's
    {"PATCH", "/balloon", "balloon"},                      // Ember's
    {"PATCH", "/balloon/statistics", "balloon_statistics"},  // Ember's
    {"PATCH", "/balloon/hinting/start", "balloon_hinting"},  // Ember's
    {"PATCH", "/balloon/hinting/stop", "balloon_hinting"},   // Ember's
};
constexpr size_t kRouteCount = std::size(kRoutes);

const char* GroupOf(const std::string& method) {
  if (method == "GET") return "get_api_requests";
  if (method == "PUT") return "put_api_requests";
  if (method == "PATCH") return "patch_api_requests";
  return nullptr;
}

// A string field of a JSON object body, or "".
std::string BodyField(const std::string& body, const char* field) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  if (doc.HasParseError() || !doc.IsObject()) return "";
  auto it = doc.FindMember(field);
  return it != doc.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

}  // namespace

std::optional<RouteCounter> FindRouteCounter(const std::string& method, const std::string& path) {
  const char* group = GroupOf(method);
  if (group == nullptr) return std::nullopt;
  for (size_t i = 0; i < kRouteCount; i++) {
    const RouteName& r = kRoutes[i];
    if (method != r.method) continue;
    bool match = r.takes_id ? absl::StartsWith(path, absl::StrCat(r.path, "/")) &&
                                  path.size() > std::string_view(r.path).size() + 1 &&
                                  path.find('/', std::string_view(r.path).size() + 1) ==
                                      std::string::npos
                            : path == r.path;
    if (match) return RouteCounter{group, r.name, i};
  }
  return std::nullopt;
}

ApiMetrics::ApiMetrics() : routes_(new Counter[kRouteCount]) {}

void ApiMetrics::SetStartupTimes(uint64_t us, uint64_t cpu_us) {
  startup_us_ = us;
  startup_cpu_us_ = cpu_us;
}

namespace {

std::optional<RouteCounter> RouteOf(const HttpRequest& request) {
  return FindRouteCounter(request.method, RoutedPath(request.path));
}

}  // namespace

void ApiMetrics::Arrived(const HttpRequest& request) {
  requests_++;
  if (std::optional<RouteCounter> route = RouteOf(request)) routes_[route->index].count++;
}

void ApiMetrics::Answered(const HttpRequest& request, const HttpResponse& response,
                          uint64_t took_us) {
  bool fault = response.status >= 400;
  if (fault) faults_++;
  if (response.deprecated) deprecated_++;  // answered with "Deprecation: true"
  std::optional<RouteCounter> route = RouteOf(request);
  if (!route) return;
  if (fault) routes_[route->index].fails++;
  if (fault) return;
  // Firecracker's latencies_us: how long the last one took, start to answer.
  std::string name = route->name;
  if (name == "vm") {
    std::string state = BodyField(request.body, "state");
    if (state == "Paused") pause_vm_us_ = took_us;
    if (state == "Resumed") resume_vm_us_ = took_us;
  } else if (name == "snapshot_create") {
    bool diff = BodyField(request.body, "snapshot_type") == "Diff";
    (diff ? diff_create_snapshot_us_ : full_create_snapshot_us_) = took_us;
  } else if (name == "snapshot_load") {
    load_snapshot_us_ = took_us;
  }
}

void ApiMetrics::AppendTo(Metrics* m) const {
  MetricGroup& server = m->Group("api_server");
  server.levels.insert(server.levels.end(), {{"process_startup_time_us", startup_us_.load()},
                                             {"process_startup_time_cpu_us", startup_cpu_us_.load()}});
  // Ember's: every request, and every one answered with an error.
  server.counts.insert(server.counts.end(), {{"requests", requests_.load()},
                                             {"faults", faults_.load()}});
  for (size_t i = 0; i < kRouteCount; i++) {
    MetricValues& counts = m->Group(GroupOf(kRoutes[i].method)).counts;
    std::string name = kRoutes[i].name;
    // PUT /mmds and PUT /mmds/config share a counter, as in Firecracker.
    auto add = [&](const std::string& field, uint64_t value) {
      for (auto& [n, v] : counts) {
        if (n == field) {
          v += value;
          return;
        }
      }
      counts.emplace_back(field, value);
    };
    add(name + "_count", routes_[i].count.load());
    add(name + "_fails", routes_[i].fails.load());
  }
  m->Group("deprecated_api").counts.emplace_back("deprecated_http_api_calls", deprecated_.load());
  MetricValues& latencies = m->Group("latencies_us").levels;
  latencies.insert(latencies.end(), {{"full_create_snapshot", full_create_snapshot_us_.load()},
                                     {"diff_create_snapshot", diff_create_snapshot_us_.load()},
                                     {"load_snapshot", load_snapshot_us_.load()},
                                     {"pause_vm", pause_vm_us_.load()},
                                     {"resume_vm", resume_vm_us_.load()}});
}

}  // namespace ember::api
