// Firecracker's latency aggregate (its LatencyAggregateMetrics): how many
// times something happened and the sum, least and most of how long it
// took. One thread records; any thread may read while it does, so every
// field is atomic, but the writer needs no locked instruction (it is the
// only one that stores).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "src/common/metric_values.h"

namespace ember {

class LatencyMetric {
 public:
  void Record(uint64_t ns) {
    Bump(count_, 1);
    Bump(sum_ns_, ns);
    // Firecracker's minimum counts in whole microseconds and 0 means "none
    // yet", so a sub-microsecond event leaves it where it was.
    uint64_t us = ns / 1000;
    uint64_t min = min_us_.load(std::memory_order_relaxed);
    if (us != 0 && (min == 0 || us < min)) min_us_.store(us, std::memory_order_relaxed);
    if (us > max_us_.load(std::memory_order_relaxed)) max_us_.store(us, std::memory_order_relaxed);
  }

  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t sum_us() const { return sum_ns_.load(std::memory_order_relaxed) / 1000; }
  uint64_t min_us() const { return min_us_.load(std::memory_order_relaxed); }
  uint64_t max_us() const { return max_us_.load(std::memory_order_relaxed); }

  // Reports "<name>.sum_us" among `counts` and "<name>.min_us",
  // "<name>.max_us" among `levels` (api/metrics_json.h nests them).
  void Append(const std::string& name, MetricValues* counts, MetricValues* levels) const {
    AppendSum(name, counts);
    AppendMinMax(name, levels);
  }
  void AppendSum(const std::string& name, MetricValues* counts) const {
    counts->emplace_back(name + ".sum_us", sum_us());
  }
  void AppendMinMax(const std::string& name, MetricValues* levels) const {
    levels->emplace_back(name + ".min_us", min_us());
    levels->emplace_back(name + ".max_us", max_us());
  }

  // Folds `other` into a reader's copy: counts and sums add, the least
  // minimum and the most maximum win.
  void Merge(const LatencyMetric& other) {
    count_ += other.count();
    sum_ns_ += other.sum_ns_.load(std::memory_order_relaxed);
    uint64_t min = other.min_us();
    if (min != 0 && (min_us() == 0 || min < min_us())) min_us_ = min;
    if (other.max_us() > max_us()) max_us_ = other.max_us();
  }

 private:
  static void Bump(std::atomic<uint64_t>& v, uint64_t by) {
    v.store(v.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> min_us_{0};
  std::atomic<uint64_t> max_us_{0};
};

}  // namespace ember
