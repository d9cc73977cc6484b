// Measures ember-jailer's own time: from its exec to the VMM's exec. Runs
// `ember --version` directly and through the jailer, many times, and
// reports wall and CPU time of both and their difference (the jailer's
// share: jail tree, binary copy, cgroups, pivot_root, device nodes).
// Needs root. Prints a table and writes JSON (--json FILE); asserts nothing.
//
//   build/ember_bench_jailer --ember build/ember --jailer build/ember-jailer
//       [--runs 50] [--json out.json]
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "src/common/clock.h"

extern char** environ;

namespace {

struct Sample {
  double wall_ms;
  double cpu_ms;
};

// Spawns `args` with stdio on /dev/null and waits; wall and child CPU ms.
Sample RunOnce(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (int fd = 0; fd <= 2; fd++) posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", O_RDWR, 0);
  double t0 = ember::MonotonicMs();
  pid_t pid;
  if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  int status;
  rusage ru;
  wait4(pid, &status, 0, &ru);
  double wall = ember::MonotonicMs() - t0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s failed (status %d)\n", argv[0], status);
    std::exit(1);
  }
  auto ms = [](timeval t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return {wall, ms(ru.ru_utime) + ms(ru.ru_stime)};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string ember = "build/ember", jailer = "build/ember-jailer", json;
  int runs = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--ember") ember = v;
    else if (k == "--jailer") jailer = v;
    else if (k == "--runs") runs = std::max(1, std::atoi(v.c_str()));
    else if (k == "--json") json = v;
    else return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  char* abs = realpath(ember.c_str(), nullptr);
  if (abs == nullptr) return std::perror(ember.c_str()), 1;
  ember = abs;
  free(abs);
  char base[] = "/tmp/ember-jailer-bench-XXXXXX";
  if (mkdtemp(base) == nullptr) return 1;
  struct stat st;
  stat(ember.c_str(), &st);

  std::vector<double> direct_wall, direct_cpu, jailed_wall, jailed_cpu;
  for (int i = 0; i < runs; i++) {
    Sample d = RunOnce({ember, "--version"});
    Sample j = RunOnce({jailer, "--id", "bench-" + std::to_string(i), "--exec-file", ember,
                        "--uid", "65534", "--gid", "65534", "--chroot-base-dir", base, "--",
                        "--version"});
    direct_wall.push_back(d.wall_ms);
    direct_cpu.push_back(d.cpu_ms);
    jailed_wall.push_back(j.wall_ms);
    jailed_cpu.push_back(j.cpu_ms);
  }
  std::string rm = std::string("rm -rf ") + base;
  (void)!system(rm.c_str());

  double dw = Median(direct_wall), dc = Median(direct_cpu);
  double jw = Median(jailed_wall), jc = Median(jailed_cpu);
  std::printf("medians of %d runs; the VMM binary is %.1f MiB (copied into each jail)\n", runs,
              st.st_size / 1048576.0);
  std::printf("%-36s %9s %9s\n", "", "wall ms", "CPU ms");
  std::printf("%-36s %9.3f %9.3f\n", "ember --version", dw, dc);
  std::printf("%-36s %9.3f %9.3f\n", "ember-jailer ... -- --version", jw, jc);
  std::printf("%-36s %9.3f %9.3f\n", "the jailer's own (difference)", jw - dw, jc - dc);
  if (!json.empty()) {
    std::ofstream out(json);
    out << "{\"runs\": " << runs << ", \"vmm_binary_bytes\": " << st.st_size
        << ", \"direct\": {\"wall_ms\": " << dw << ", \"cpu_ms\": " << dc << "}"
        << ", \"jailed\": {\"wall_ms\": " << jw << ", \"cpu_ms\": " << jc << "}"
        << ", \"jailer_own\": {\"wall_ms\": " << jw - dw << ", \"cpu_ms\": " << jc - dc << "}}\n";
  }
  return 0;
}
