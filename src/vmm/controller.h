// The VMM thread's side of the API: it holds the configuration until
// InstanceStart, then the running Vm, and runs every VmmAction on the VMM
// thread, whatever thread submitted it. Firecracker's rules apply: devices
// and machine are configured before the start, the balloon target and its
// statistics after.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/vmm/vm.h"
#include "src/vmm/metrics.h"
#include "src/vmm/vmm_action.h"

namespace ember {

class Controller {
 public:
  // `config` may already hold a configuration (from --config-file).
  static absl::StatusOr<std::unique_ptr<Controller>> Create(std::string id, VmConfig config,
                                                            ConsoleIo io);

  // Any thread: runs `action` on the VMM thread and waits for its result.
  absl::StatusOr<VmmResult> Submit(VmmAction action);

  // Any thread: counts an API request (and whether it was refused).
  void CountApiRequest(bool fault) {
    api_requests_++;
    if (fault) api_faults_++;
  }
  // How a metrics line is written (api/metrics_json.h in production).
  using MetricsFormat = std::function<std::string(const Metrics&)>;
  void set_metrics_format(MetricsFormat format) { metrics_format_ = std::move(format); }
  // How a snapshot carries the configuration (the API's JSON in production).
  struct ConfigCodec {
    std::function<std::string(const VmConfig&)> to_json;
    std::function<absl::StatusOr<VmConfig>(absl::string_view)> from_json;
  };
  void set_config_codec(ConfigCodec codec) { config_codec_ = std::move(codec); }

  // The VMM thread: serves actions until the microVM starts (at once when
  // `start_now`), then runs it until it stops; returns the exit code.
  int Run(bool start_now);

 private:
  struct Job {
    VmmAction action;
    std::promise<absl::StatusOr<VmmResult>> result;
  };

  Controller(std::string id, VmConfig config, ConsoleIo io, UniqueFd wake)
      : id_(std::move(id)), config_(std::move(config)), io_(io), wake_(std::move(wake)) {}
  void RunJobs();
  absl::StatusOr<VmmResult> Handle(const VmmAction& action);
  absl::Status Start();
  // controller_snapshot.cc
  absl::Status WriteSnapshot(const CreateSnapshot& a);
  absl::Status LoadFromSnapshot(const LoadSnapshot& a);
  absl::Status BeforeStart(const char* what) const;
  absl::Status OpenMetrics(const MetricsConfig& config);
  // Writes one metrics line now.
  absl::Status WriteMetrics();
  // Serves the periodic flush on `loop` (before start, then on the VM's).
  absl::Status WatchMetricsTimer(EventLoop& loop);

 public:
  // Points Ember's log at the configured file or FIFO, level and format.
  static absl::Status ApplyLogger(const LoggerConfig& config);

 private:

  const std::string id_;
  VmConfig config_;
  const ConsoleIo io_;
  UniqueFd wake_;  // eventfd: jobs are waiting
  std::mutex mu_;
  std::deque<Job> jobs_;
  bool closed_ = false;  // Run has returned
  std::atomic<uint64_t> api_requests_{0};
  std::atomic<uint64_t> api_faults_{0};
  MetricsFormat metrics_format_;
  ConfigCodec config_codec_;
  UniqueFd metrics_fd_;
  UniqueFd metrics_timer_;  // every kMetricsPeriodS once metrics are on
  EventLoop* metrics_loop_ = nullptr;
  EventLoop* pre_boot_loop_ = nullptr;  // while waiting for InstanceStart
  std::unique_ptr<Vm> vm_;
};

}  // namespace ember
