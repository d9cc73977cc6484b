// How devices and the VMM report metrics: name/value pairs, in the order
// they are to appear (src/vmm/metrics.h gathers them into a line).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ember {

using MetricValues = std::vector<std::pair<std::string, uint64_t>>;

}  // namespace ember
