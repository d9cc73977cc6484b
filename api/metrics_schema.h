// Firecracker's metrics line, group by group and field by field, in the
// order Firecracker writes it (src/vmm/src/logger/metrics.rs and the device
// metrics.rs files of the version in shared/reference). It is the one list
// of these names: api/metrics_json.cc writes every field of it, 0 where
// Ember reports nothing, and tests check against it.
#pragma once

#include <span>

namespace ember::api {

enum class MetricKind {
  kCount,    // Firecracker's SharedIncMetric: the line has the change since the last line
  kLevel,    // its SharedStoreMetric: the line has the value as it is
  kLatency,  // its LatencyAggregateMetrics: {"min_us", "max_us"} levels, "sum_us" a count
};

struct MetricField {
  const char* name;
  MetricKind kind;
};

struct MetricGroupSpec {
  const char* name;
  std::span<const MetricField> fields;
  // "block", "net", "pmem": one "<name>_<id>" group per device, and
  // "<name>" their sum (latency minimum and maximum 0, as Firecracker).
  bool per_device = false;
};

// Every group Firecracker writes on x86_64 (its "rtc" is aarch64's only).
std::span<const MetricGroupSpec> FirecrackerMetricGroups();

}  // namespace ember::api
