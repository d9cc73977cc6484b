// Measures what Ember's start-up costs, independent of the guest's speed:
//   - process start to "ready to boot" (the VM fully built), in CPU ms;
//   - process start to the first KVM_RUN, in wall ms;
//   - VMM RSS excluding guest memory, 1 vCPU and 128 MiB, with the guest
//     kernel running.
// Prints a table and writes JSON (--json FILE). Not a test: it asserts
// nothing. Ember logs the monotonic time and process CPU time at those two
// points; this program starts it and reads them back.
//
//   build/ember_bench_startup --ember build/ember --kernel build/guest/vmlinux
//       --initrd build/guest/initramfs.cpio [--runs 20] [--json out.json]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "src/common/clock.h"

using ember::MonotonicMs;

extern char** environ;

namespace {

struct Options {
  std::string ember = "build/ember";
  std::string kernel = "build/guest/vmlinux";
  std::string initrd = "build/guest/initramfs.cpio";
  std::string json;
  int runs = 20;
};

struct Sample {
  double ready_cpu_ms = 0;    // process CPU at "ready to boot"
  double first_run_ms = 0;    // wall, exec to first KVM_RUN
  double config_to_run_ms = 0;  // wall, config file read to first KVM_RUN
  double first_run_cpu_ms = 0;
  double rss_overhead_mib = 0;
  double pss_overhead_mib = 0;
};

// Reads a number that follows `key` in `text`, or -1.
double After(const std::string& text, const std::string& key) {
  size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::atof(text.c_str() + at + key.size());
}

// The number before `suffix` on the line holding `marker`.
double Before(const std::string& text, const std::string& marker, const std::string& suffix) {
  size_t line = text.find(marker);
  if (line == std::string::npos) return -1;
  size_t end = text.find(suffix, line);
  if (end == std::string::npos) return -1;
  size_t start = text.rfind(' ', end - 2);
  return std::atof(text.c_str() + start + 1);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `field` (Rss or Pss) summed over every mapping except guest memory, in
// KiB. Guest memory is the mapping named [anon:ember-guest-mem], or failing
// that (kernels without anonymous VMA names) the adjacent mappings, from an
// anonymous one to an anonymous one, that together are as large as the
// guest: madvise splits the one mapping (huge pages where the kernel was
// loaded), and so does a kernel mapped from its file.
double OverheadKib(pid_t pid, uint64_t guest_bytes, const std::string& field) {
  struct Mapping {
    unsigned long lo, hi;
    bool anon, named_guest, guest;
    double kib;
  };
  std::vector<Mapping> maps;
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  std::string line, key = field + ":";
  while (std::getline(in, line)) {
    unsigned long lo, hi;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > 20) {
      std::istringstream fields(line);
      std::string range, perms, offset, dev, inode, path;
      fields >> range >> perms >> offset >> dev >> inode >> path;
      bool named = line.find("ember-guest-mem") != std::string::npos;
      maps.push_back({lo, hi, path.empty() || named, named, named, 0});
    } else if (line.rfind(key, 0) == 0 && !maps.empty()) {
      maps.back().kib += std::atof(line.c_str() + key.size());
    }
  }
  // A kernel on a read-only file system is mapped from its file inside
  // guest memory (boot.h): the run may hold file mappings between its
  // anonymous ends.
  for (size_t i = 0; i < maps.size(); i++) {
    if (!maps[i].anon) continue;
    unsigned long size = 0;
    for (size_t j = i; j < maps.size() && size < guest_bytes; j++) {
      if (j > i && maps[j].lo != maps[j - 1].hi) break;
      size += maps[j].hi - maps[j].lo;
      if (size == guest_bytes && maps[j].anon) {
        for (size_t k = i; k <= j; k++) maps[k].guest = true;
      }
    }
  }
  double total = 0;
  for (const Mapping& m : maps) total += m.guest ? 0 : m.kib;
  return total;
}

// The monotonic seconds that start the log line holding `marker`, in ms.
double LineTimeMs(const std::string& text, const std::string& marker) {
  size_t at = text.find(marker);
  if (at == std::string::npos) return -1;
  size_t start = text.rfind('\n', at);
  return std::atof(text.c_str() + (start == std::string::npos ? 0 : start + 1)) * 1e3;
}

bool RunOnce(const Options& o, const std::string& dir, bool measure_rss, Sample* s) {
  std::string config = dir + "/vm.json", log = dir + "/ember.log";
  std::ofstream(config) << "{\"boot-source\": {\"kernel_image_path\": \"" << o.kernel
                        << "\", \"initrd_path\": \"" << o.initrd
                        << "\", \"boot_args\": \"console=ttyS0 reboot=k panic=1 pci=off\"},"
                        << " \"machine-config\": {\"vcpu_count\": 1, \"mem_size_mib\": 128}}";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const char* argv[] = {o.ember.c_str(), "--no-api", "--config-file", config.c_str(), nullptr};
  double t0 = MonotonicMs();
  pid_t pid;
  if (posix_spawn(&pid, o.ember.c_str(), &fa, nullptr, const_cast<char**>(argv), environ) != 0) {
    std::perror("posix_spawn");
    return false;
  }
  posix_spawn_file_actions_destroy(&fa);
  // Wait for the first KVM_RUN line (the guest boots for a while after).
  std::string text;
  for (int i = 0; i < 5000 && text.find("first KVM_RUN") == std::string::npos; i++) {
    usleep(1000);
    text = ReadFile(log);
  }
  if (measure_rss) {
    sleep(3);  // let the guest kernel run and the VMM settle
    s->rss_overhead_mib = OverheadKib(pid, 128ull << 20, "Rss") / 1024.0;
    s->pss_overhead_mib = OverheadKib(pid, 128ull << 20, "Pss") / 1024.0;
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  text = ReadFile(log);
  s->ready_cpu_ms = Before(text, "ready to boot", " ms process CPU");
  double first_mono = After(text, "first KVM_RUN at ");
  s->first_run_cpu_ms = Before(text, "first KVM_RUN", " ms process CPU");
  if (first_mono < 0 || s->ready_cpu_ms < 0) {
    std::fprintf(stderr, "no timing lines in the log:\n%s\n", text.c_str());
    return false;
  }
  s->first_run_ms = first_mono - t0;
  // Logged just before the config file is read.
  s->config_to_run_ms = first_mono - LineTimeMs(text, "starting, instance");
  return true;
}

struct Stats {
  double min, median, p90, max;
};

Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 9 / 10)], v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--ember") o.ember = v;
    else if (k == "--kernel") o.kernel = v;
    else if (k == "--initrd") o.initrd = v;
    else if (k == "--json") o.json = v;
    else if (k == "--runs") o.runs = std::max(1, std::atoi(v.c_str()));
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  char dir[] = "/tmp/ember-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;

  std::vector<double> ready_cpu, first_run, config_to_run, first_run_cpu, rss, pss;
  for (int i = 0; i < o.runs; i++) {
    Sample s;
    bool with_rss = i < 3;  // RSS needs the guest to run a while: sample a few
    if (!RunOnce(o, dir, with_rss, &s)) return 1;
    ready_cpu.push_back(s.ready_cpu_ms);
    first_run.push_back(s.first_run_ms);
    config_to_run.push_back(s.config_to_run_ms);
    first_run_cpu.push_back(s.first_run_cpu_ms);
    if (with_rss) {
      rss.push_back(s.rss_overhead_mib);
      pss.push_back(s.pss_overhead_mib);
    }
  }
  std::string cmd = std::string("rm -rf ") + dir;
  (void)!system(cmd.c_str());

  struct Row {
    const char* name;
    const char* unit;
    Stats st;
    double target;
  } rows[] = {
      {"start to ready-to-boot (CPU)", "ms", Summarize(ready_cpu), 2.0},
      {"start to first KVM_RUN (wall)", "ms", Summarize(first_run), 0},
      {"config file to first KVM_RUN (wall)", "ms", Summarize(config_to_run), 1.0},
      {"start to first KVM_RUN (CPU)", "ms", Summarize(first_run_cpu), 0},
      {"RSS excluding guest memory", "MiB", Summarize(rss), 2.0},
      {"PSS excluding guest memory", "MiB", Summarize(pss), 0},
  };
  std::printf("%-38s %8s %8s %8s %8s %8s\n", "metric", "min", "median", "p90", "max", "target");
  for (const Row& r : rows) {
    std::printf("%-38s %8.3f %8.3f %8.3f %8.3f %8s  %s\n", r.name, r.st.min, r.st.median, r.st.p90,
                r.st.max, r.target > 0 ? std::to_string(r.target).substr(0, 4).c_str() : "-",
                r.unit);
  }
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << "{\"runs\": " << o.runs << ", \"metrics\": [";
    for (size_t i = 0; i < std::size(rows); i++) {
      const Row& r = rows[i];
      out << (i ? ", " : "") << "{\"name\": \"" << r.name << "\", \"unit\": \"" << r.unit
          << "\", \"min\": " << r.st.min << ", \"median\": " << r.st.median
          << ", \"p90\": " << r.st.p90 << ", \"max\": " << r.st.max << "}";
    }
    out << "]}\n";
  }
  return 0;
}
