// The VMM thread's side of the API. Any thread submits a VmmAction; the VMM
// thread runs it: before InstanceStart through the pre-boot controller
// (configuration), after it through the runtime controller (a live VM).
// The Controller itself owns what spans both: the job queue, the logger,
// metrics, starting the microVM (from its configuration or a snapshot)
// and the event loop that waits for InstanceStart.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/vmm/metrics.h"
#include "src/vmm/preboot_controller.h"
#include "src/vmm/runtime_controller.h"
#include "src/vmm/vmm_action.h"

namespace ember {

class Controller {
 public:
  // How snapshots carry the configuration and how a metrics line is
  // written (the API's JSON in production: api/vm_config_json.h,
  // api/metrics_json.h).
  struct Codecs {
    std::function<std::string(const VmConfig&)> config_to_json;
    std::function<absl::StatusOr<VmConfig>(absl::string_view)> config_from_json;
    std::function<std::string(const Metrics&)> metrics_to_json;
  };

  // `config` may already hold a configuration (from --config-file).
  static absl::StatusOr<std::unique_ptr<Controller>> Create(std::string id, VmConfig config,
                                                            ConsoleIo io, Codecs codecs);

  // Any thread: runs `action` on the VMM thread and waits for its result.
  absl::StatusOr<VmmResult> Submit(VmmAction action);

  // Any thread: counts an API request (and whether it was refused).
  void CountApiRequest(bool fault) {
    api_requests_++;
    if (fault) api_faults_++;
  }

  // The VMM thread: serves actions until the microVM starts (at once when
  // `start_now`), then runs it until it stops; returns the exit code.
  int Run(bool start_now);

  // Points Ember's log at the configured file or FIFO, level and format.
  static absl::Status ApplyLogger(const LoggerConfig& config);

 private:
  struct Job {
    VmmAction action;
    std::promise<absl::StatusOr<VmmResult>> result;
  };

  Controller(std::string id, VmConfig config, ConsoleIo io, Codecs codecs, UniqueFd wake)
      : id_(std::move(id)), preboot_(std::move(config)), io_(io), codecs_(std::move(codecs)),
        wake_(std::move(wake)) {}
  void RunJobs();
  absl::StatusOr<VmmResult> Handle(const VmmAction& action);
  absl::StatusOr<VmmResult> Do(const GetInstanceInfo&);
  absl::StatusOr<VmmResult> Do(const FlushMetrics&);
  absl::StatusOr<VmmResult> Do(const PutLogger& a);
  absl::StatusOr<VmmResult> Do(const PutMetrics& a);
  absl::StatusOr<VmmResult> Do(const InstanceStart& a);
  absl::StatusOr<VmmResult> Do(const LoadSnapshot& a);  // controller_snapshot.cc
  // The rest: the pre-boot or the runtime controller's.
  template <typename A>
  absl::StatusOr<VmmResult> Do(const A& a) {
    return runtime_ ? runtime_->Handle(a) : preboot_.Handle(a);
  }
  void Started(std::unique_ptr<Vm> vm);
  const char* VmState() const;

  absl::Status OpenMetrics(const MetricsConfig& config);
  // Writes one metrics line now.
  absl::Status WriteMetrics();
  // Serves the periodic flush on `loop` (before start, then on the VM's).
  absl::Status WatchMetricsTimer(EventLoop& loop);
  // Serves jobs until InstanceStart or a stop signal; the exit code of a
  // stop, else kExitOk.
  int WaitForStart();

  const std::string id_;
  PreBootController preboot_;  // holds the configuration, also after the start
  const ConsoleIo io_;
  const Codecs codecs_;
  UniqueFd wake_;  // eventfd: jobs are waiting
  std::mutex mu_;
  std::deque<Job> jobs_;
  bool closed_ = false;  // Run has returned
  std::atomic<uint64_t> api_requests_{0};
  std::atomic<uint64_t> api_faults_{0};
  UniqueFd metrics_fd_;
  UniqueFd metrics_timer_;  // every kMetricsPeriodS once metrics are on
  EventLoop* metrics_loop_ = nullptr;
  EventLoop* pre_boot_loop_ = nullptr;  // while waiting for InstanceStart
  std::optional<RuntimeController> runtime_;  // once the microVM exists
};

}  // namespace ember
