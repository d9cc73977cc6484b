// The metrics line in Firecracker's shape: {"utc_timestamp_ms": ...,
// "api_server": {...}, "balloon": {...}, "block_<id>": {...}, "block":
// {...}, ...}, every group and field of api/metrics_schema.h in
// Firecracker's order, 0 where Ember reports nothing; what Ember reports
// beyond them follows Firecracker's fields in the same group, and the
// "ember" group (the VM's state) comes last.
#pragma once

#include <map>
#include <string>

#include "src/vmm/metrics.h"

namespace ember::api {

class MetricsWriter {
 public:
  // The next line, without its newline. Counts (and fields Firecracker
  // counts) are what changed since the previous line, as Firecracker's
  // SharedIncMetric reports them; a total that went down (a VM restored
  // from a snapshot starts its devices at 0) is reported whole. Levels
  // are as they are. A "block" or "net" group is the sum of its devices'.
  std::string Line(const Metrics& metrics);

 private:
  // Each count's total at the previous line, by "group/field".
  std::map<std::string, uint64_t> last_;
};

}  // namespace ember::api
