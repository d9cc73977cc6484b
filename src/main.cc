// ember: boots one microVM and exits with its exit code (see exit_code.h).
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "api/api_metrics.h"
#include "api/http_server.h"
#include "api/metrics_json.h"
#include "api/router.h"
#include "api/vm_config_json.h"
#include "src/cli.h"
#include "src/common/clock.h"
#include "src/common/log.h"
#include "src/common/no_wait_output.h"
#include "src/common/signal_metrics.h"
#include "src/common/file_lease.h"
#include "src/common/stop_signals.h"
#include "src/common/version.h"
#include "src/common/mapped_file.h"
#include "src/common/program_pages.h"
#include "src/seccomp/seccomp.h"
#include "src/vmm/controller.h"
#include "src/vmm/snapshot/state_file.h"
#include "src/vstate/guest_memory.h"
#include "src/common/exit_code.h"

namespace ember {
namespace {

// Makes glibc's allocator make the same system calls whichever thread
// allocates, so that every seccomp filter allows them. By default each
// thread gets its own arena (an mmap'd heap); freeing at the top of one
// shrinks it, and the first shrink in the process reads
// /proc/sys/vm/overcommit_memory (arena.c shrink_heap, check_may_shrink_heap)
// with openat, which only the VMM thread may call: a 50 KB API request
// killed the VMM with 148. With one arena every thread allocates from the
// main heap, which grows and shrinks with brk and serves large blocks with
// mmap/munmap, all allowed to every thread. Fixed thresholds switch off
// glibc's dynamic mmap threshold, so which of those calls a given size makes
// does not change with what the process freed before (the same in a test as
// in a long-lived VMM). The values are glibc's defaults. Must run before the
// first thread starts: a thread's arena is chosen at its first allocation.
void ConfigureAllocator() {
  constexpr int kThreshold = 128 * 1024;
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, kThreshold);
  mallopt(M_TRIM_THRESHOLD, kThreshold);
}

// Chooses the filters each thread installs for itself (seccomp.h).
absl::Status SetUpSeccomp(const CliOptions& opts) {
  seccomp::InstallDenialHandler();
  if (opts.no_seccomp) {
    LOG_WARN("--no-seccomp: every thread may make any system call");
    return absl::OkStatus();
  }
  absl::StatusOr<seccomp::FilterMap> filters =
      opts.seccomp_filter.empty() ? seccomp::ParseFilters(seccomp::DefaultFilters())
                                  : seccomp::LoadFilterFile(opts.seccomp_filter);
  if (!filters.ok()) return filters.status();
  return seccomp::UseFilters(std::move(*filters));
}

// --describe-snapshot: the state file's version, as Firecracker prints
// its own ("v2"), once the file has passed the reader's checks.
int DescribeSnapshot(const std::string& path) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(path);
  absl::Status st = file.ok() ? snapshot::StateReader::Open(file->data()).status() : file.status();
  if (!st.ok()) {
    std::fprintf(stderr, "ember: --describe-snapshot: %s\n", std::string(st.message()).c_str());
    return kExitGenericError;
  }
  std::printf("v%u\n", snapshot::kStateVersion);
  return kExitOk;
}

// What the jailer's --start-time-us and friends say of the start-up cost
// (Firecracker reports the same as process_startup_time_us and _cpu_us).
void LogStartupTime(const CliOptions& opts, api::ApiMetrics* metrics) {
  double ms = 0, cpu_ms = 0;
  if (opts.start_time_us) {
    ms = MonotonicMs() - static_cast<double>(*opts.start_time_us) / 1000;
    LOG_INFO("started %.3f ms after the jailer", ms);
  }
  if (opts.start_time_cpu_us) {
    const double jailer_ms = static_cast<double>(opts.parent_cpu_time_us.value_or(0)) / 1000;
    cpu_ms = ProcessCpuMs() - static_cast<double>(*opts.start_time_cpu_us) / 1000 + jailer_ms;
    LOG_INFO("start-up CPU %.3f ms, the jailer's included", cpu_ms);
  }
  metrics->SetStartupTimes(static_cast<uint64_t>(std::max(ms, 0.0) * 1000),
                           static_cast<uint64_t>(std::max(cpu_ms, 0.0) * 1000));
}

int Main(int argc, char** argv) {
  ConfigureAllocator();
  absl::StatusOr<CliOptions> opts =
      ParseCli(std::vector<std::string>(argv + 1, argv + argc), argc > 0 ? argv[0] : "ember");
  if (!opts.ok()) {
    std::fprintf(stderr, "ember: %s\n\n%s", std::string(opts.status().message()).c_str(), kUsage);
    return kExitArgParsing;
  }
  if (opts->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (opts->version) {
    std::fputs(VersionText(argc > 0 ? argv[0] : "ember").c_str(), stdout);
    return kExitOk;
  }
  if (opts->snapshot_version) {
    std::printf("v%u\n", snapshot::kStateVersion);
    return kExitOk;
  }
  if (!opts->describe_snapshot.empty()) return DescribeSnapshot(opts->describe_snapshot);
  // The vCPU's first exit unmaps what start-up touched of the binary.
  PrepareStartupPageRelease();
  // The log and the console never wait on a reader (no_wait_output.h).
  SetLogSink(OwnNoWaitOpening(STDERR_FILENO));
  // The logging flags configure the logger as PUT /logger does, before
  // the first line; the config file's logger section comes on top. Ember's
  // lines carry their level by default (log.h): --show-level keeps that.
  const LoggerConfig cli_logger{opts->log_path, opts->level, /*show_level=*/true,
                                opts->show_log_origin, opts->module};
  if (absl::Status st = Controller::ApplyLogger(cli_logger); !st.ok()) {
    std::fprintf(stderr, "ember: %s\n", std::string(st.message()).c_str());
    return kExitBadConfiguration;
  }
  // SIGINT and SIGTERM stop the VMM in order (through a signalfd on the VMM
  // thread): blocked before any thread starts, so that no thread, the API
  // thread included, takes their default action.
  BlockStopSignals();
  // SIGIO too: it tells that someone would write a file mapped into guest
  // memory, and the VMM thread reads it from a signalfd (file_lease.h).
  BlockLeaseSignal();
  // Fatal signals leave a last metrics line and Firecracker's exit codes.
  InstallSignalHandlers();
  LOG_INFO("Ember v%s starting, instance %s", kVersion, opts->id);
  // Before any VM is built; cli.cc's help says why it is off by default.
  GuestMemory::SetMergeableByDefault(opts->merge_guest_memory);
  if (opts->merge_guest_memory) LOG_WARN("--merge-guest-memory: guest pages may be merged by KSM");
  if (absl::Status st = SetUpSeccomp(*opts); !st.ok()) {
    LOG_ERROR("%s", st.message());
    return kExitBadConfiguration;
  }

  VmConfig config;
  if (!opts->config_file.empty()) {
    absl::StatusOr<VmConfig> parsed = api::LoadVmConfigFile(opts->config_file);
    if (!parsed.ok()) {
      LOG_ERROR("bad configuration: %s", parsed.status().message());
      return kExitBadConfiguration;
    }
    config = std::move(*parsed);
  }
  if (config.logger) {
    // A flag given on the command line stays on.
    if (opts->show_level) config.logger->show_level = true;
    if (opts->show_log_origin) config.logger->show_log_origin = true;
  }
  if (!opts->metrics_path.empty()) {
    // As Firecracker: metrics are configured once.
    if (config.metrics) {
      LOG_ERROR("--metrics-path and the config file's metrics section both configure metrics");
      return kExitBadConfiguration;
    }
    config.metrics = MetricsConfig{opts->metrics_path};
  }
  config.boot_timer = opts->boot_timer;
  // As Firecracker: the metadata file is read now, and MMDS's limit is the
  // API's payload limit unless given.
  std::optional<std::string> metadata;
  if (!opts->metadata.empty()) {
    std::ifstream in(opts->metadata);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      LOG_ERROR("--metadata %s: cannot read it", opts->metadata);
      return kExitBadConfiguration;
    }
    metadata = text.str();
  }
  // The API thread counts requests; the VMM thread adds them to each
  // metrics line, which reports counts as changes since the last one.
  api::ApiMetrics api_metrics;
  auto writer = std::make_shared<api::MetricsWriter>();
  auto metrics_to_json = [writer, &api_metrics](const Metrics& m) {
    Metrics line = m;
    api_metrics.AppendTo(&line);
    return writer->Line(line);
  };
  absl::StatusOr<std::unique_ptr<Controller>> controller =
      Controller::Create(opts->id, std::move(config),
                         ConsoleIo{STDIN_FILENO, OwnNoWaitOpening(STDOUT_FILENO)},
                         {api::VmConfigToJson, api::ParseVmConfig, metrics_to_json});
  if (!controller.ok()) {
    LOG_ERROR("%s", controller.status().message());
    return kExitGenericError;
  }
  if (absl::Status st = (*controller)->SetUpMmds(
          opts->mmds_size_limit.value_or(opts->http_api_max_payload_size), metadata);
      !st.ok()) {
    LOG_ERROR("--metadata %s: %s", opts->metadata, st.message());
    return kExitBadConfiguration;
  }
  // With a config file the microVM starts at once, API or not.
  const bool start_now = !opts->config_file.empty();
  LogStartupTime(*opts, &api_metrics);
  if (opts->no_api) return (*controller)->Run(start_now);

  Controller* c = controller->get();
  absl::StatusOr<std::unique_ptr<api::HttpServer>> server = api::HttpServer::Start(
      opts->api_sock, opts->http_api_max_payload_size,
      [c, &api_metrics](const api::HttpRequest& request) {
        double start = MonotonicMs();
        api_metrics.Arrived(request);
        api::HttpResponse r =
            api::Route(request, [c](VmmAction action) { return c->Submit(std::move(action)); });
        api_metrics.Answered(request, r, static_cast<uint64_t>((MonotonicMs() - start) * 1000));
        return r;
      });
  if (!server.ok()) {
    LOG_ERROR("%s", server.status().message());
    return kExitGenericError;
  }
  LOG_INFO("API server listening on %s; %.3f ms process CPU", opts->api_sock, ProcessCpuMs());
  int code = c->Run(start_now);
  server->reset();  // joins the API thread, removes the socket
  return code;
}

}  // namespace
}  // namespace ember

int main(int argc, char** argv) { return ember::Main(argc, argv); }
