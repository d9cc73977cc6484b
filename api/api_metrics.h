// The API's part of the metrics line: Firecracker's request counters by
// route (get_api_requests, put_api_requests, patch_api_requests: a
// "<route>_count" and a "<route>_fails" each), deprecated_api, the
// start-up times in api_server and the latencies_us the API measures (a
// request's whole time; the vmm_* ones are the VMM's). The API thread
// counts; the VMM thread reads, when it writes a line.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "api/http_server.h"
#include "src/vmm/metrics.h"

namespace ember::api {

// Which counter a request moves: the group by method and the route's name
// ("drive" for PUT /drives/{id}), or nullopt for a path Ember does not
// know. Every route Ember serves has one (api_metrics_test.cc checks).
struct RouteCounter {
  const char* group;
  const char* name;
  size_t index;
};
std::optional<RouteCounter> FindRouteCounter(const std::string& method, const std::string& path);

class ApiMetrics {
 public:
  ApiMetrics();

  // Firecracker's api_server.process_startup_time_us and _cpu_us, known
  // when the jailer passed --start-time-us (0 otherwise, as there).
  void SetStartupTimes(uint64_t us, uint64_t cpu_us);

  // Any thread: a request as it arrives, before it runs, so that the
  // line a FlushMetrics writes counts that request (Firecracker counts a
  // request when it parses it).
  void Arrived(const HttpRequest& request);
  // Its answer, `took_us` after it arrived. An answer of 400 or more is a
  // fail of its route (Firecracker counts those its parser refuses; Ember
  // every refusal).
  void Answered(const HttpRequest& request, const HttpResponse& response, uint64_t took_us);
  // Both at once.
  void Count(const HttpRequest& request, const HttpResponse& response, uint64_t took_us) {
    Arrived(request);
    Answered(request, response, took_us);
  }

  // Adds what it counted to `m` (totals: the line turns them into changes).
  void AppendTo(Metrics* m) const;

 private:
  struct Counter {
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> fails{0};
  };
  std::unique_ptr<Counter[]> routes_;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> faults_{0};
  std::atomic<uint64_t> deprecated_{0};
  std::atomic<uint64_t> startup_us_{0};
  std::atomic<uint64_t> startup_cpu_us_{0};
  // latencies_us as the API sees them, the last of each.
  std::atomic<uint64_t> full_create_snapshot_us_{0};
  std::atomic<uint64_t> diff_create_snapshot_us_{0};
  std::atomic<uint64_t> load_snapshot_us_{0};
  std::atomic<uint64_t> pause_vm_us_{0};
  std::atomic<uint64_t> resume_vm_us_{0};
};

}  // namespace ember::api
