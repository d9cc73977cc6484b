// A metrics line as JSON: {"utc_timestamp_ms": ..., "api_server": {...},
// "vm": {...}, "serial": {...}, "<device>": {...}, ...}.
#pragma once

#include <string>

#include "src/vmm/metrics.h"

namespace ember::api {

std::string MetricsToJson(const Metrics& metrics);

}  // namespace ember::api
