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
#include "src/mmds/data_store.h"
#include "src/mmds/metrics.h"
#include "src/vmm/metrics.h"
#include "src/vmm/builder.h"
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

  // The VMM thread: serves actions until the microVM starts (at once when
  // `start_now`), then runs it until it stops; returns the exit code.
  int Run(bool start_now);

  // Before Run: MMDS's size limit (--mmds-size-limit) and its first
  // document (--metadata, JSON text); InvalidArgument for text that is not
  // JSON, ResourceExhausted for a document over the limit.
  absl::Status SetUpMmds(size_t size_limit, const std::optional<std::string>& metadata);

  // Points Ember's log at the configured file or FIFO, level and format.
  static absl::Status ApplyLogger(const LoggerConfig& config);

 private:
  struct Job {
    VmmAction action;
    std::promise<absl::StatusOr<VmmResult>> result;
  };

  Controller(std::string id, VmConfig config, ConsoleIo io, Codecs codecs, UniqueFd wake,
             mmds::DataStore mmds)
      : id_(std::move(id)), preboot_(std::move(config)), io_(io), codecs_(std::move(codecs)),
        wake_(std::move(wake)), mmds_(std::move(mmds)) {}
  void RunJobs();
  absl::StatusOr<VmmResult> Handle(const VmmAction& action);
  absl::StatusOr<VmmResult> Do(const GetInstanceInfo&);
  absl::StatusOr<VmmResult> Do(const FlushMetrics&);
  absl::StatusOr<VmmResult> Do(const PutLogger& a);
  absl::StatusOr<VmmResult> Do(const PutMetrics& a);
  absl::StatusOr<VmmResult> Do(const InstanceStart& a);
  absl::StatusOr<VmmResult> Do(const LoadSnapshot& a);  // controller_snapshot.cc
  // MMDS's store lives beside both controllers: the API reads and writes it
  // before and after the start.
  absl::StatusOr<VmmResult> Do(const PutMmds& a);
  absl::StatusOr<VmmResult> Do(const PatchMmds& a);
  absl::StatusOr<VmmResult> Do(const GetMmds&);
  absl::Status CheckMmdsServed(const std::string* body);
  absl::StatusOr<VmmResult> Do(const PutMmdsConfig& a);
  // Opens the interface's TAP now, as Firecracker does, and holds it for
  // the start: a TAP another process holds is refused at the request.
  absl::StatusOr<VmmResult> Do(const PutNetworkInterface& a);
  // The store follows the configuration's version and imds_compat.
  void ApplyMmdsConfig();
  // The rest: the pre-boot or the runtime controller's.
  template <typename A>
  absl::StatusOr<VmmResult> Do(const A& a) {
    return runtime_ ? runtime_->Handle(a) : preboot_.Handle(a);
  }
  void Started(std::unique_ptr<Vm> vm);
  const char* VmState() const;
  // Before InstanceStart, while the VMM thread is free: brings prepared_
  // up to date with the configuration (builder.h's PreparedVm).
  void PrepareAhead();

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
  uint64_t metrics_missed_ = 0;  // lines a full FIFO dropped
  uint64_t metrics_fails_ = 0;   // lines whose write failed
  UniqueFd metrics_fd_;
  MetricsConfig metrics_config_;  // emit_id and properties, for each line
  UniqueFd metrics_timer_;  // every kMetricsPeriodS once metrics are on
  EventLoop* metrics_loop_ = nullptr;
  EventLoop* pre_boot_loop_ = nullptr;  // while waiting for InstanceStart
  mmds::DataStore mmds_;  // the net devices' MMDS stacks point at it
  mmds::MmdsMetrics mmds_metrics_;
  std::optional<VmShell> spare_;  // made ahead, for the first VM built
  std::optional<PreparedVm> prepared_;  // before InstanceStart
  OpenTaps taps_;  // by interface id, from PUT /network-interfaces to the start
  // What failed to prepare last time, not tried again until it changes.
  std::optional<std::pair<MachineConfig, BootSourceConfig>> prepare_failed_;
  std::optional<RuntimeController> runtime_;  // once the microVM exists
};

}  // namespace ember
