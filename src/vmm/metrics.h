// What one metrics line reports, as the VMM and the API gather it;
// api/metrics_json.h writes it in Firecracker's shape.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/latency_metric.h"
#include "src/common/log.h"
#include "src/common/signal_metrics.h"

namespace ember {

// One top-level group of the line: "vcpu", "uart", "block_rootfs", ...
// Firecracker has two kinds of metric, and the line treats them so:
// `counts` are totals since they started (its SharedIncMetric; the line
// reports the change since the previous line), `levels` are reported as
// they are (its SharedStoreMetric: latencies, gauges).
struct MetricGroup {
  std::string name;
  MetricValues counts;
  MetricValues levels;
};

struct Metrics {
  uint64_t utc_timestamp_ms = 0;
  // metrics.emit_id's instance id and metrics.properties, after the time.
  std::optional<std::string> id;
  std::optional<std::map<std::string, std::string>> properties;
  std::string vm_state;  // "Not started", "Running", "Paused"
  std::vector<MetricGroup> groups;

  // The group called `name`, added when there is none yet.
  MetricGroup& Group(std::string_view name) {
    for (MetricGroup& g : groups) {
      if (g.name == name) return g;
    }
    groups.push_back(MetricGroup{std::string(name), {}, {}});
    return groups.back();
  }
};

// How long the VMM took for the last of each action (Firecracker's
// latencies_us.vmm_*), in microseconds; 0 until it happens.
struct VmmLatencies {
  uint64_t full_create_snapshot_us = 0;
  uint64_t diff_create_snapshot_us = 0;
  uint64_t load_snapshot_us = 0;
  uint64_t pause_vm_us = 0;
  uint64_t resume_vm_us = 0;

  void AppendTo(Metrics* m) const {
    MetricValues& l = m->Group("latencies_us").levels;
    l.insert(l.end(), {{"vmm_full_create_snapshot", full_create_snapshot_us},
                       {"vmm_diff_create_snapshot", diff_create_snapshot_us},
                       {"vmm_load_snapshot", load_snapshot_us},
                       {"vmm_pause_vm", pause_vm_us},
                       {"vmm_resume_vm", resume_vm_us}});
  }
};

// What the whole process counts: the logger's lines, signals, seccomp.
inline void AppendProcessMetrics(Metrics* m) {
  LogCounters log = GetLogCounters();
  MetricValues& logger = m->Group("logger").counts;
  logger.insert(logger.end(), {{"missed_log_count", log.missed_log_count},
                               {"rate_limited_log_count", log.rate_limited_log_count}});
  SignalCounters s = GetSignalCounters();
  m->Group("seccomp").levels.emplace_back("num_faults", s.seccomp_faults);
  MetricGroup& signals = m->Group("signals");
  signals.levels = {{"sigbus", s.sigbus}, {"sigsegv", s.sigsegv}, {"sigxfsz", s.sigxfsz},
                    {"sigxcpu", s.sigxcpu}, {"sighup", s.sighup}, {"sigill", s.sigill}};
  signals.counts.emplace_back("sigpipe", s.sigpipe);
}

}  // namespace ember
