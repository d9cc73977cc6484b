// Log lines: "<monotonic seconds> [<thread>] <LEVEL> message" on stderr.
// The VMM's own diagnostics; the guest's console never goes here.
#pragma once

#include <cstdint>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace ember {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// Names the calling thread in its log lines (and in /proc, up to 15 chars).
void SetThreadName(absl::string_view name);
void LogLine(LogLevel level, absl::string_view message);

// For messages a guest can cause at will: true for the first 8 of a
// counter's values, then for every 1024th, so a hostile guest cannot flood
// the log.
inline bool LogRateLimited(uint64_t count) { return count <= 8 || count % 1024 == 0; }

template <typename... Args>
void Log(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) LogLine(level, absl::StrFormat(format, args...));
}

#define LOG_ERROR(...) ::ember::Log(::ember::LogLevel::kError, __VA_ARGS__)
#define LOG_WARN(...) ::ember::Log(::ember::LogLevel::kWarn, __VA_ARGS__)
#define LOG_INFO(...) ::ember::Log(::ember::LogLevel::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) ::ember::Log(::ember::LogLevel::kDebug, __VA_ARGS__)

}  // namespace ember
