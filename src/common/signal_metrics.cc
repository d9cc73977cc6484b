#include "src/common/signal_metrics.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <iterator>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "src/common/log.h"

namespace ember {
namespace {

// Firecracker's exit codes (FcExitCode) for the signals that end it.
struct Fatal {
  int signo;
  int exit_code;
  const char* name;
};
constexpr Fatal kFatal[] = {
    {SIGBUS, 149, "sigbus"},  {SIGSEGV, 150, "sigsegv"}, {SIGXFSZ, 151, "sigxfsz"},
    {SIGXCPU, 154, "sigxcpu"}, {SIGHUP, 156, "sighup"},   {SIGILL, 157, "sigill"},
};

// Lock-free atomics only: handlers read and write them.
std::atomic<int> g_metrics_fd{-1};
std::atomic<const std::string*> g_labels{nullptr};
std::atomic<uint64_t> g_fatal[std::size(kFatal)];
std::atomic<uint64_t> g_sigpipe{0};
std::atomic<uint64_t> g_seccomp_faults{0};

// A line built without allocating, for handlers. The metrics line has
// room for the labels and is still one write a pipe takes whole
// (PIPE_BUF); the log line needs little (a handler's stack is a thread's).
template <size_t kSize>
struct Line {
  char buf[kSize];
  size_t len = 0;
  void Add(const char* s) {
    while (*s != '\0' && len + 1 < sizeof(buf)) buf[len++] = *s++;
  }
  void Add(uint64_t n) {
    char digits[24];
    int i = 0;
    do {
      digits[i++] = static_cast<char>('0' + n % 10);
      n /= 10;
    } while (n != 0);
    while (i > 0 && len + 1 < sizeof(buf)) buf[len++] = digits[--i];
  }
};

void OnFatal(int signo, siginfo_t*, void*) {
  for (const Fatal& f : kFatal) {
    if (f.signo == signo) DieOfSignal(signo, f.exit_code);
  }
  _exit(2);  // Firecracker's UnexpectedError: a signal installed for nothing
}

void OnSigpipe(int, siginfo_t*, void*) { g_sigpipe.fetch_add(1, std::memory_order_relaxed); }

void Install(int signo, void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction sa = {};
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO;
  sigfillset(&sa.sa_mask);  // one handler at a time
  sigaction(signo, &sa, nullptr);
}

}  // namespace

void InstallSignalHandlers() {
  for (const Fatal& f : kFatal) Install(f.signo, OnFatal);
  Install(SIGPIPE, OnSigpipe);
}

void SetLastMetricsFd(int fd, std::string labels) {
  // Set once a process (metrics are configured once); a handler may be
  // reading the old one, so it stays.
  if (!labels.empty()) g_labels = new std::string(std::move(labels));
  g_metrics_fd = fd;
}

std::string MetricsLabels(const std::optional<std::string>& id,
                          const std::optional<std::map<std::string, std::string>>& properties) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  WriteMetricsLabels(w, id, properties);
  w.EndObject();
  std::string out = buf.GetString();
  return out.substr(1, out.size() - 2);
}

void DieOfSignal(int signo, int exit_code) {
  const char* name = "signal";
  for (size_t i = 0; i < std::size(kFatal); i++) {
    if (kFatal[i].signo != signo) continue;
    g_fatal[i] = 1;
    name = kFatal[i].name;
  }
  if (signo == SIGSYS) g_seccomp_faults = 1;
  if (signo != SIGSYS) {
    Line<128> log;
    log.Add("ember: received ");
    log.Add(name);
    log.Add("; exiting with ");
    log.Add(static_cast<uint64_t>(exit_code));
    log.Add("\n");
    (void)WriteLogSink(log.buf, log.len);
  }
  int fd = g_metrics_fd.load();
  if (fd >= 0) {
    timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    Line<4096> m;
    m.Add("{\"utc_timestamp_ms\":");
    m.Add(static_cast<uint64_t>(now.tv_sec) * 1000 + static_cast<uint64_t>(now.tv_nsec) / 1000000);
    // Whole or not at all: cut, they would break the line's JSON.
    const std::string* labels = g_labels.load();
    static_assert(kMaxLastLineLabels + 1024 <= sizeof(m.buf));
    if (labels != nullptr && labels->size() <= kMaxLastLineLabels) {
      m.Add(",");
      m.Add(labels->c_str());
    }
    m.Add(",\"seccomp\":{\"num_faults\":");
    m.Add(g_seccomp_faults.load());
    m.Add("},\"signals\":{");
    for (size_t i = 0; i < std::size(kFatal); i++) {
      m.Add(i == 0 ? "\"" : ",\"");
      m.Add(kFatal[i].name);
      m.Add("\":");
      m.Add(g_fatal[i].load());
    }
    m.Add(",\"sigpipe\":");
    m.Add(g_sigpipe.load());
    m.Add("}}\n");
    (void)!::write(fd, m.buf, m.len);
  }
  _exit(exit_code);
}

SignalCounters GetSignalCounters() {
  SignalCounters c = {};
  uint64_t* fields[] = {&c.sigbus, &c.sigsegv, &c.sigxfsz, &c.sigxcpu, &c.sighup, &c.sigill};
  for (size_t i = 0; i < std::size(kFatal); i++) *fields[i] = g_fatal[i].load();
  c.sigpipe = g_sigpipe.load();
  c.seccomp_faults = g_seccomp_faults.load();
  return c;
}

}  // namespace ember
