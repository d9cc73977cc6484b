// What one metrics line reports; the VMM fills it in, api/metrics_json.h
// writes it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ember {

// One metrics line: counters since the process started.
struct Metrics {
  uint64_t utc_timestamp_ms = 0;
  uint64_t api_requests = 0;
  uint64_t api_faults = 0;
  std::string vm_state;
  uint64_t serial_dropped_input = 0;
  // By device (block_<id>, net_<id>, balloon): name/value counters.
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, uint64_t>>>> devices;
};

}  // namespace ember
