#include "src/common/log.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/no_wait_output.h"

namespace ember {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
// The fd lines go to, times two, plus one if it is a socket: one atomic,
// so that a thread never pairs a new fd with the old kind.
std::atomic<int64_t> g_sink{int64_t{STDERR_FILENO} * 2};
// Defaults keep the level and drop the origin, as Ember always printed.
std::atomic<bool> g_show_level{true};
std::atomic<bool> g_show_origin{false};
// logger.module (null: every file). Never destroyed: a thread may log
// during exit. A line being written holds the module it read, so a new
// one frees the old once no line uses it.
std::atomic<std::shared_ptr<const std::string>>& Module() {
  static auto* module = new std::atomic<std::shared_ptr<const std::string>>();
  return *module;
}
std::atomic<uint64_t> g_missed_lines{0};
std::atomic<uint64_t> g_rate_limited_lines{0};
// The main thread is the VMM thread; it keeps the process name "ember".
thread_local std::string t_thread_name = "vmm";

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError: return "ERROR";
    case LogLevel::kWarn: return "WARN";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kOff: return "OFF";
  }
  return "?";
}

}  // namespace

std::optional<LogLevel> ParseLogLevel(absl::string_view name) {
  if (name == "Error") return LogLevel::kError;
  if (name == "Warning") return LogLevel::kWarn;
  if (name == "Info") return LogLevel::kInfo;
  if (name == "Debug" || name == "Trace") return LogLevel::kDebug;
  if (name == "Off") return LogLevel::kOff;
  return std::nullopt;
}

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) <= g_level; }

void SetLogSink(int fd) {
  // The old fd stays open: another thread may be writing a line to it now,
  // and the logger is set once per process.
  if (fd < 0) fd = STDERR_FILENO;
  g_sink = int64_t{fd} * 2 + (IsSocket(fd) ? 1 : 0);
}

bool WriteLogSink(const char* data, size_t len) {
  // main.cc hands the logger its own O_NONBLOCK opening of a pipe or FIFO.
  const int64_t sink = g_sink.load();
  return WriteNoWait(static_cast<int>(sink / 2), sink & 1, data, len) ==
         static_cast<ssize_t>(len);
}

void SetLogModule(absl::string_view module) {
  Module().store(module.empty() ? nullptr : std::make_shared<const std::string>(module));
}

absl::Status CheckLogModule(absl::string_view module, absl::string_view field) {
  if (!module.empty() && (module[0] == '/' || module[0] == '.')) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " '", module,
        "' must be a path below Ember's source tree, as \"src/devices/virtio\" or \"api/\""));
  }
  if (absl::StrContains(module, "::")) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " '", module,
        "': Ember filters by source path below its tree, as \"src/devices/virtio\" or "
        "\"api\", not by Rust module"));
  }
  return absl::OkStatus();
}

void SetLogFormat(std::optional<bool> show_level, std::optional<bool> show_origin) {
  if (show_level) g_show_level = *show_level;
  if (show_origin) g_show_origin = *show_origin;
}

void SetThreadName(absl::string_view name) {
  t_thread_name = std::string(name);
  pthread_setname_np(pthread_self(), t_thread_name.substr(0, 15).c_str());
}

void LogLine(LogLevel level, const char* file, int line, absl::string_view message) {
  std::shared_ptr<const std::string> module = Module().load();
  if (module != nullptr && !absl::StartsWith(file, *module)) return;
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  std::string text = absl::StrFormat("%d.%06d [%s] ", ts.tv_sec, ts.tv_nsec / 1000, t_thread_name);
  if (g_show_level) absl::StrAppend(&text, LevelName(level), " ");
  if (g_show_origin) {
    const char* base = std::strrchr(file, '/');
    absl::StrAppend(&text, "[", base ? base + 1 : file, ":", line, "] ");
  }
  absl::StrAppend(&text, message, "\n");
  // One write per line keeps lines from different threads whole.
  if (!WriteLogSink(text.data(), text.size())) {
    g_missed_lines.fetch_add(1, std::memory_order_relaxed);
  }
}

LogCounters GetLogCounters() {
  return {g_missed_lines.load(std::memory_order_relaxed),
          g_rate_limited_lines.load(std::memory_order_relaxed)};
}

bool LogRateLimiter::Allow(int64_t now_ms, uint64_t* suppressed) {
  std::lock_guard lock(mu_);
  if (!started_ || now_ms - window_start_ms_ >= kWindowMs || now_ms < window_start_ms_) {
    started_ = true;
    window_start_ms_ = now_ms;
    in_window_ = 0;
  }
  if (in_window_ >= kBurst) {
    suppressed_++;
    return false;
  }
  in_window_++;
  *suppressed = std::exchange(suppressed_, 0);
  return true;
}

void LogLineRateLimited(LogRateLimiter& limiter, LogLevel level, const char* file, int line,
                        absl::string_view message) {
  uint64_t suppressed = 0;
  if (!limiter.Allow(static_cast<int64_t>(MonotonicMs()), &suppressed)) {
    g_rate_limited_lines.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (suppressed > 0) {
    LogLine(level, file, line,
            absl::StrCat(message, " (", suppressed, " similar messages suppressed)"));
  } else {
    LogLine(level, file, line, message);
  }
}

}  // namespace ember
