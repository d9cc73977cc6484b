// Firecracker's signals and seccomp metrics, and the last metrics line a
// dying Ember writes. SIGBUS, SIGSEGV, SIGXFSZ, SIGXCPU, SIGHUP and SIGILL
// are logged, noted in a last line and end the process with Firecracker's
// exit code for them; SIGPIPE is counted and ignored otherwise (the write
// that raised it fails with EPIPE, and its caller copes). A denied system
// call (seccomp.cc's SIGSYS handler) ends the same way. Process-wide, as
// signal dispositions are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace ember {

// Installs the handlers; call before any thread starts.
void InstallSignalHandlers();

// Where a dying process writes its last line: the metrics file or FIFO,
// or -1. Any thread; the fd must stay open (the Controller keeps it).
// `labels` go after the time: `"id":"...","properties":{...}` as
// MetricsLabels writes them, or empty; longer than kMaxLastLineLabels,
// they are left out of that line (it is built without allocating).
inline constexpr size_t kMaxLastLineLabels = 3072;
void SetLastMetricsFd(int fd, std::string labels = "");

// metrics.emit_id's id and metrics.properties as fields of a JSON object,
// without the braces; empty when neither is there.
std::string MetricsLabels(const std::optional<std::string>& id,
                          const std::optional<std::map<std::string, std::string>>& properties);

// Async-signal-safe: notes `signo` (SIGSYS: a seccomp fault), writes the
// last line, {"utc_timestamp_ms":...,"seccomp":{...},"signals":{...}},
// and ends the process with `exit_code`. Only what a signal handler may
// touch goes into it, so the other groups are left out.
[[noreturn]] void DieOfSignal(int signo, int exit_code);

// For metrics lines: signals[...] as Firecracker reports them (1 once the
// fatal one arrived: only a last line shows it; sigpipe a count) and
// seccomp.num_faults.
struct SignalCounters {
  uint64_t sigbus, sigsegv, sigxfsz, sigxcpu, sigpipe, sighup, sigill;
  uint64_t seccomp_faults;
};
SignalCounters GetSignalCounters();

}  // namespace ember
