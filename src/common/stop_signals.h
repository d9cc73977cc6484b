// SIGINT and SIGTERM stop Ember in order: they are blocked, so no thread
// takes their default action, and the VMM thread reads them from a
// signalfd.
#pragma once

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember {

// Blocks both in the calling thread; threads it starts later inherit it.
void BlockStopSignals();
// Blocks both and returns a signalfd (non-blocking) that receives them.
absl::StatusOr<UniqueFd> StopSignalFd();

}  // namespace ember
