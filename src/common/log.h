// Log lines: "<monotonic seconds> [<thread>] <LEVEL> [file:line] message",
// on stderr or a file or FIFO set by PUT /logger. The VMM's own
// diagnostics; the guest's console never goes here.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace ember {

enum class LogLevel { kOff = -1, kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void SetLogLevel(LogLevel level);
// "Error", "Warning", "Info", "Debug", "Trace" (as Debug) or "Off".
std::optional<LogLevel> ParseLogLevel(absl::string_view name);
// Where lines go from now on (an fd the logger keeps; -1: stderr).
void SetLogSink(int fd);
// The fd lines go to now; for async-signal-safe writers.
int LogSinkFd();
// Whether lines carry the level and the file:line of the call.
void SetLogFormat(bool show_level, bool show_origin);
bool LogEnabled(LogLevel level);
// Names the calling thread in its log lines (and in /proc, up to 15 chars).
void SetThreadName(absl::string_view name);
void LogLine(LogLevel level, const char* file, int line, absl::string_view message);

// For messages a guest can cause at will: true for the first 8 of a
// counter's values, then for every 1024th, so a hostile guest cannot flood
// the log.
inline bool LogRateLimited(uint64_t count) { return count <= 8 || count % 1024 == 0; }

template <typename... Args>
void Log(LogLevel level, const char* file, int line, const absl::FormatSpec<Args...>& format,
         const Args&... args) {
  if (LogEnabled(level)) LogLine(level, file, line, absl::StrFormat(format, args...));
}

#define LOG_ERROR(...) ::ember::Log(::ember::LogLevel::kError, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_WARN(...) ::ember::Log(::ember::LogLevel::kWarn, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_INFO(...) ::ember::Log(::ember::LogLevel::kInfo, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_DEBUG(...) ::ember::Log(::ember::LogLevel::kDebug, __FILE__, __LINE__, __VA_ARGS__)

}  // namespace ember
