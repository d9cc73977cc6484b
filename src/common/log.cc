#include "src/common/log.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"

namespace ember {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
// The main thread is the VMM thread; it keeps the process name "ember".
thread_local std::string t_thread_name = "vmm";

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError: return "ERROR";
    case LogLevel::kWarn: return "WARN";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kDebug: return "DEBUG";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) <= g_level; }

void SetThreadName(absl::string_view name) {
  t_thread_name = std::string(name);
  pthread_setname_np(pthread_self(), t_thread_name.substr(0, 15).c_str());
}

void LogLine(LogLevel level, absl::string_view message) {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  std::string line = absl::StrFormat("%d.%06d [%s] %s %s\n", ts.tv_sec, ts.tv_nsec / 1000,
                                     t_thread_name, LevelName(level), message);
  // One write per line keeps lines from different threads whole.
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace ember
