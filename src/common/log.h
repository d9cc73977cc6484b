// Log lines: "<monotonic seconds> [<thread>] <LEVEL> [file:line] message",
// on stderr or a file or FIFO set by PUT /logger. The VMM's own
// diagnostics; the guest's console never goes here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace ember {

enum class LogLevel { kOff = -1, kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void SetLogLevel(LogLevel level);
// "Error", "Warning", "Info", "Debug", "Trace" (as Debug) or "Off".
std::optional<LogLevel> ParseLogLevel(absl::string_view name);
// Where lines go from now on (an fd the logger keeps; -1: stderr).
void SetLogSink(int fd);
// Writes `len` bytes where lines go now, never waiting on a full pipe or
// socket; async-signal-safe. False if not all of them went.
bool WriteLogSink(const char* data, size_t len);
// Whether lines carry the level and the file:line of the call; absent:
// as they did.
void SetLogFormat(std::optional<bool> show_level, std::optional<bool> show_origin);
// logger.module: only lines from source files whose path below the source
// tree starts with `module` ("src/devices/virtio", "api/"); empty: all.
void SetLogModule(absl::string_view module);
// Refuses what cannot be such a path (absolute, "./", a Rust module path);
// `field` names the setting in the message.
absl::Status CheckLogModule(absl::string_view module, absl::string_view field);
bool LogEnabled(LogLevel level);
// Names the calling thread in its log lines (and in /proc, up to 15 chars).
void SetThreadName(absl::string_view name);
void LogLine(LogLevel level, const char* file, int line, absl::string_view message);

// For the metrics' logger group (Firecracker's names): lines the sink did
// not take whole (a full FIFO drops them), and lines a LogRateLimiter
// dropped.
struct LogCounters {
  uint64_t missed_log_count;
  uint64_t rate_limited_log_count;
};
LogCounters GetLogCounters();

// For messages a guest can cause at will: true for the first 8 of a
// counter's values, then for every 1024th. Prefer the LOG_*_RATELIMITED
// macros below, which bound lines per second and not per event.
inline bool LogRateLimited(uint64_t count) { return count <= 8 || count % 1024 == 0; }

// Bounds the lines one call site writes: at most kBurst in any window of
// kWindowMs, the rest counted and dropped. The first line let through
// after some were dropped says how many. Any thread; constant-initialized,
// so a function-local static costs no guard.
class LogRateLimiter {
 public:
  static constexpr uint32_t kBurst = 10;
  static constexpr int64_t kWindowMs = 5000;

  constexpr LogRateLimiter() = default;
  // Whether a line may be written at `now_ms` (monotonic); when it may,
  // *suppressed is the number dropped since the last line let through.
  bool Allow(int64_t now_ms, uint64_t* suppressed);

 private:
  std::mutex mu_;
  bool started_ = false;
  int64_t window_start_ms_ = 0;
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;
};

// A line through `limiter`, with a "suppressed" note when lines were
// dropped before it; use it (through the macros) for every message a guest
// can cause.
void LogLineRateLimited(LogRateLimiter& limiter, LogLevel level, const char* file, int line,
                        absl::string_view message);

template <typename... Args>
void Log(LogLevel level, const char* file, int line, const absl::FormatSpec<Args...>& format,
         const Args&... args) {
  if (LogEnabled(level)) LogLine(level, file, line, absl::StrFormat(format, args...));
}

#define LOG_ERROR(...) ::ember::Log(::ember::LogLevel::kError, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_WARN(...) ::ember::Log(::ember::LogLevel::kWarn, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_INFO(...) ::ember::Log(::ember::LogLevel::kInfo, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_DEBUG(...) ::ember::Log(::ember::LogLevel::kDebug, __FILE__, __LINE__, __VA_ARGS__)

template <typename... Args>
void LogLimited(LogRateLimiter& limiter, LogLevel level, const char* file, int line,
                const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) {
    LogLineRateLimited(limiter, level, file, line, absl::StrFormat(format, args...));
  }
}

// Rate-limited per call site (LogRateLimiter): for every message a guest
// can cause, however often it tries.
#define EMBER_LOG_RATELIMITED_(level, ...)                                        \
  do {                                                                            \
    static ::ember::LogRateLimiter ember_log_limiter_;                            \
    ::ember::LogLimited(ember_log_limiter_, level, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
#define LOG_WARN_RATELIMITED(...) EMBER_LOG_RATELIMITED_(::ember::LogLevel::kWarn, __VA_ARGS__)
#define LOG_INFO_RATELIMITED(...) EMBER_LOG_RATELIMITED_(::ember::LogLevel::kInfo, __VA_ARGS__)
#define LOG_DEBUG_RATELIMITED(...) EMBER_LOG_RATELIMITED_(::ember::LogLevel::kDebug, __VA_ARGS__)

}  // namespace ember
