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

// metrics.emit_id's id and metrics.properties as the fields of the JSON
// object `w` (a rapidjson Writer) is in: every metrics line's, and through
// MetricsLabels, the last line's.
template <typename Writer>
void WriteMetricsLabels(Writer& w, const std::optional<std::string>& id,
                        const std::optional<std::map<std::string, std::string>>& properties) {
  if (id) {
    w.Key("id");
    w.String(id->c_str(), static_cast<unsigned>(id->size()));
  }
  if (!properties) return;
  w.Key("properties");
  w.StartObject();
  for (const auto& [key, value] : *properties) {
    w.Key(key.c_str(), static_cast<unsigned>(key.size()));
    w.String(value.c_str(), static_cast<unsigned>(value.size()));
  }
  w.EndObject();
}
// The same, without the braces of an object; empty when neither is there.
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
