// The API's costs: process start to a ready API socket (wall ms, and the
// CPU ms Ember logs at that point), then GET / round trips on one
// keep-alive connection (p50, p99, requests per second). Prints a table and
// writes JSON (--json FILE). Asserts nothing.
//
//   build/ember_bench_api --ember build/ember [--starts 20] [--requests 5000] [--json api.json]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "src/common/clock.h"

using ember::MonotonicMs;

extern char** environ;

namespace {

int Connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
  close(fd);
  return -1;
}

// One GET / and its whole response (headers, then Content-Length bytes).
bool RoundTrip(int fd) {
  static const char kRequest[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  if (write(fd, kRequest, sizeof(kRequest) - 1) != sizeof(kRequest) - 1) return false;
  std::string in;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    in.append(buf, n);
    size_t end = in.find("\r\n\r\n");
    if (end == std::string::npos) continue;
    size_t cl = in.find("Content-Length: ");
    size_t len = cl == std::string::npos ? 0 : std::atoi(in.c_str() + cl + 16);
    if (in.size() >= end + 4 + len) return true;
  }
}

struct Stats {
  double min, p50, p99, max;
};
Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, size_t(q * v.size()))]; };
  return {v.front(), at(0.5), at(0.99), v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string ember = "build/ember", json;
  int starts = 20, requests = 5000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--ember") ember = v;
    else if (k == "--starts") starts = std::max(1, std::atoi(v.c_str()));
    else if (k == "--requests") requests = std::max(1, std::atoi(v.c_str()));
    else if (k == "--json") json = v;
    else return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  char dir[] = "/tmp/ember-api-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;
  std::string sock = std::string(dir) + "/api.sock", log = std::string(dir) + "/ember.log";

  std::vector<double> ready_wall, ready_cpu, latency;
  double rps = 0;
  for (int run = 0; run < starts; run++) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const char* args[] = {ember.c_str(), "--api-sock", sock.c_str(), nullptr};
    double t0 = MonotonicMs();
    pid_t pid;
    if (posix_spawn(&pid, ember.c_str(), &fa, nullptr, const_cast<char**>(args), environ) != 0) {
      return std::perror("posix_spawn"), 1;
    }
    int fd = -1;
    while ((fd = Connect(sock)) < 0 && MonotonicMs() - t0 < 5000) usleep(100);
    ready_wall.push_back(MonotonicMs() - t0);
    if (fd < 0) return std::fprintf(stderr, "the API socket never came up\n"), 1;
    if (run == 0) {  // latency on the first instance's connection
      for (int i = 0; i < 200; i++) RoundTrip(fd);  // warm up
      double start = MonotonicMs();
      for (int i = 0; i < requests; i++) {
        double t = MonotonicMs();
        if (!RoundTrip(fd)) return std::fprintf(stderr, "request failed\n"), 1;
        latency.push_back((MonotonicMs() - t) * 1000);
      }
      rps = requests / ((MonotonicMs() - start) / 1000);
    }
    close(fd);
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    size_t at = s.find(" ms process CPU", s.find("API server listening"));
    if (at == std::string::npos) return std::fprintf(stderr, "no timing in the log:\n%s", s.c_str()), 1;
    ready_cpu.push_back(std::atof(s.c_str() + s.rfind(' ', at - 1) + 1));
  }
  std::string rm = std::string("rm -rf ") + dir;
  (void)!system(rm.c_str());

  Stats wall = Summarize(ready_wall), cpu = Summarize(ready_cpu), lat = Summarize(latency);
  std::printf("%-34s %9s %9s %9s %9s\n", "metric", "min", "p50", "p99", "max");
  std::printf("%-34s %9.3f %9.3f %9.3f %9.3f  ms (target: 2 CPU ms)\n", "start to API socket ready (wall)",
              wall.min, wall.p50, wall.p99, wall.max);
  std::printf("%-34s %9.3f %9.3f %9.3f %9.3f  ms\n", "start to API socket ready (CPU)", cpu.min,
              cpu.p50, cpu.p99, cpu.max);
  std::printf("%-34s %9.1f %9.1f %9.1f %9.1f  us\n", "GET / round trip, one connection", lat.min,
              lat.p50, lat.p99, lat.max);
  std::printf("%-34s %9.0f\n", "requests per second", rps);
  if (!json.empty()) {
    std::ofstream out(json);
    out << "{\"ready_wall_ms\": {\"min\": " << wall.min << ", \"p50\": " << wall.p50
        << ", \"p99\": " << wall.p99 << "}, \"ready_cpu_ms\": {\"min\": " << cpu.min
        << ", \"p50\": " << cpu.p50 << ", \"p99\": " << cpu.p99
        << "}, \"latency_us\": {\"p50\": " << lat.p50 << ", \"p99\": " << lat.p99
        << "}, \"requests_per_second\": " << rps << "}\n";
  }
  return 0;
}
