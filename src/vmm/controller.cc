#include "src/vmm/controller.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/version.h"
#include "src/common/status_macros.h"
#include "src/common/exit_code.h"

namespace ember {
namespace {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

// Replaces the entry with `item`'s id, or appends `item`.
template <typename T>
void ReplaceById(std::vector<T>& list, const T& item, std::string T::*id) {
  for (T& existing : list) {
    if (existing.*id == item.*id) {
      existing = item;
      return;
    }
  }
  list.push_back(item);
}

}  // namespace

// Firecracker writes metrics every 60 seconds, and on FlushMetrics.
constexpr int kMetricsPeriodS = 60;

absl::Status Controller::OpenMetrics(const MetricsConfig& config) {
  UniqueFd fd(open(config.metrics_path.c_str(),
                   O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("metrics.metrics_path ", config.metrics_path));
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return ErrnoStatus("timerfd_create");
  itimerspec every = {};
  every.it_interval.tv_sec = every.it_value.tv_sec = kMetricsPeriodS;
  if (timerfd_settime(timer.get(), 0, &every, nullptr) < 0) return ErrnoStatus("timerfd_settime");
  metrics_fd_ = std::move(fd);
  metrics_timer_ = std::move(timer);
  return absl::OkStatus();
}

absl::Status Controller::WatchMetricsTimer(EventLoop& loop) {
  if (!metrics_timer_.valid() || metrics_loop_ == &loop) return absl::OkStatus();
  if (metrics_loop_ != nullptr) metrics_loop_->Remove(metrics_timer_.get());
  metrics_loop_ = &loop;
  return loop.Add(metrics_timer_.get(), EPOLLIN, [this](uint32_t) {
    uint64_t expirations;
    (void)!::read(metrics_timer_.get(), &expirations, sizeof(expirations));
    if (absl::Status st = WriteMetrics(); !st.ok()) LOG_WARN("metrics: %s", st.message());
  });
}

absl::Status Controller::WriteMetrics() {
  if (!metrics_fd_.valid()) return absl::FailedPreconditionError("metrics are not configured");
  if (!metrics_format_) return absl::InternalError("no metrics format");
  Metrics m;
  m.utc_timestamp_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  m.api_requests = api_requests_.load();
  m.api_faults = api_faults_.load();
  m.vm_state = !vm_ ? "Not started" : vm_->paused() ? "Paused" : "Running";
  if (vm_) vm_->CollectMetrics(&m);
  std::string line = metrics_format_(m) + "\n";
  // Best effort: a full FIFO loses a line rather than stalling the VMM.
  if (::write(metrics_fd_.get(), line.data(), line.size()) < 0 && errno != EAGAIN) {
    return ErrnoStatus("write metrics");
  }
  return absl::OkStatus();
}

absl::Status Controller::ApplyLogger(const LoggerConfig& config) {
  if (!config.log_path.empty()) {
    // O_NONBLOCK: a FIFO without a reader fails here, a full one drops lines.
    int fd = open(config.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC,
                  0600);
    if (fd < 0) return ErrnoStatus(absl::StrCat("logger.log_path ", config.log_path));
    SetLogSink(fd);
  }
  if (config.level) {
    std::optional<LogLevel> level = ParseLogLevel(*config.level);
    if (!level) return absl::InvalidArgumentError("logger.level " + *config.level);
    SetLogLevel(*level);
  }
  SetLogFormat(config.show_level, config.show_log_origin);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Controller>> Controller::Create(std::string id, VmConfig config,
                                                               ConsoleIo io) {
  if (config.logger) RETURN_IF_ERROR(ApplyLogger(*config.logger));
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus("eventfd");
  std::optional<MetricsConfig> metrics = config.metrics;
  std::unique_ptr<Controller> c(
      new Controller(std::move(id), std::move(config), io, std::move(wake)));
  if (metrics) RETURN_IF_ERROR(c->OpenMetrics(*metrics));
  return c;
}

absl::StatusOr<VmmResult> Controller::Submit(VmmAction action) {
  std::future<absl::StatusOr<VmmResult>> result;
  {
    std::lock_guard lock(mu_);
    if (closed_) return absl::UnavailableError("the microVM has stopped");
    jobs_.push_back(Job{std::move(action), {}});
    result = jobs_.back().result.get_future();
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  return result.get();
}

void Controller::RunJobs() {
  uint64_t count;
  (void)!::read(wake_.get(), &count, sizeof(count));
  for (;;) {
    Job job;
    {
      std::lock_guard lock(mu_);
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job.result.set_value(Handle(job.action));
  }
}

absl::Status Controller::BeforeStart(const char* what) const {
  if (vm_ == nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " cannot be changed after the microVM has started"));
}

absl::Status Controller::Start() {
  if (vm_ != nullptr) return absl::FailedPreconditionError("the microVM is already running");
  ASSIGN_OR_RETURN(vm_, Vm::Create(config_, io_));
  return absl::OkStatus();
}

absl::StatusOr<VmmResult> Controller::Handle(const VmmAction& action) {
  return std::visit(
      Overloaded{
          [&](const GetInstanceInfo&) -> absl::StatusOr<VmmResult> {
            const char* state = !vm_ ? "Not started" : vm_->paused() ? "Paused" : "Running";
            return InstanceInfo{id_, state, kVersion};
          },
          [&](const GetVmConfig&) -> absl::StatusOr<VmmResult> { return config_; },
          [&](const GetMachineConfig&) -> absl::StatusOr<VmmResult> { return config_.machine; },
          [&](const PutMachineConfig& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("machine-config"));
            RETURN_IF_ERROR(ValidateMachineConfig(a.config));
            config_.machine = a.config;
            return std::monostate();
          },
          [&](const PatchMachineConfig& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("machine-config"));
            MachineConfig m = config_.machine;
            if (a.vcpu_count) m.vcpu_count = *a.vcpu_count;
            if (a.mem_size_mib) m.mem_size_mib = *a.mem_size_mib;
            if (a.track_dirty_pages) m.track_dirty_pages = *a.track_dirty_pages;
            RETURN_IF_ERROR(ValidateMachineConfig(m));
            config_.machine = m;
            return std::monostate();
          },
          [&](const PutBootSource& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("boot-source"));
            config_.boot_source = a.config;
            return std::monostate();
          },
          [&](const PutDrive& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("drives"));
            std::vector<DriveConfig> drives = config_.drives;
            ReplaceById(drives, a.config, &DriveConfig::drive_id);
            RETURN_IF_ERROR(ValidateDrives(drives));
            config_.drives = std::move(drives);
            return std::monostate();
          },
          [&](const PatchDrive& a) -> absl::StatusOr<VmmResult> {
            auto it = std::find_if(config_.drives.begin(), config_.drives.end(),
                                   [&](const DriveConfig& d) { return d.drive_id == a.drive_id; });
            if (it == config_.drives.end()) {
              return absl::InvalidArgumentError(
                  absl::StrCat("there is no drive '", a.drive_id, "'"));
            }
            if (!a.path_on_host) return std::monostate();
            if (vm_ != nullptr) RETURN_IF_ERROR(vm_->SwapDrive(a.drive_id, *a.path_on_host));
            it->path_on_host = *a.path_on_host;
            return std::monostate();
          },
          [&](const PutNetworkInterface& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("network-interfaces"));
            std::vector<NetConfig> net = config_.net;
            ReplaceById(net, a.config, &NetConfig::iface_id);
            RETURN_IF_ERROR(ValidateNet(net));
            config_.net = std::move(net);
            return std::monostate();
          },
          [&](const PutBalloon& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("the balloon device"));
            RETURN_IF_ERROR(ValidateBalloon(a.config, config_.machine));
            config_.balloon = a.config;
            return std::monostate();
          },
          [&](const PatchBalloon& a) -> absl::StatusOr<VmmResult> {
            if (!config_.balloon) return absl::InvalidArgumentError("there is no balloon device");
            BalloonConfig changed = *config_.balloon;
            changed.amount_mib = a.amount_mib;
            RETURN_IF_ERROR(ValidateBalloon(changed, config_.machine));
            if (vm_ != nullptr) RETURN_IF_ERROR(vm_->SetBalloonTarget(a.amount_mib));
            config_.balloon->amount_mib = a.amount_mib;
            return std::monostate();
          },
          [&](const GetBalloon&) -> absl::StatusOr<VmmResult> {
            if (!config_.balloon) return absl::InvalidArgumentError("there is no balloon device");
            return *config_.balloon;
          },
          [&](const GetBalloonStats&) -> absl::StatusOr<VmmResult> {
            if (vm_ == nullptr) {
              return absl::FailedPreconditionError("balloon statistics exist once the microVM runs");
            }
            ASSIGN_OR_RETURN(BalloonStats stats, vm_->GetBalloonStats());
            return stats;
          },
          [&](const PatchBalloonStats& a) -> absl::StatusOr<VmmResult> {
            if (!config_.balloon) return absl::InvalidArgumentError("there is no balloon device");
            if (vm_ != nullptr) {
              RETURN_IF_ERROR(vm_->SetBalloonStatsInterval(a.stats_polling_interval_s));
            }
            config_.balloon->stats_polling_interval_s = a.stats_polling_interval_s;
            return std::monostate();
          },
          [&](const PatchNetworkInterface& a) -> absl::StatusOr<VmmResult> {
            for (const NetConfig& n : config_.net) {
              if (n.iface_id == a.iface_id) return std::monostate();
            }
            return absl::InvalidArgumentError(
                absl::StrCat("there is no network interface '", a.iface_id, "'"));
          },
          [&](const PutSerial& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("serial"));
            config_.serial = a.config;
            return std::monostate();
          },
          [&](const InstanceStart&) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(Start());
            return std::monostate();
          },
          [&](const PutLogger& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("the logger"));
            RETURN_IF_ERROR(ApplyLogger(a.config));
            config_.logger = a.config;
            return std::monostate();
          },
          [&](const PutMetrics& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(BeforeStart("metrics"));
            if (metrics_fd_.valid()) {
              return absl::FailedPreconditionError("metrics are already configured");
            }
            RETURN_IF_ERROR(OpenMetrics(a.config));
            if (metrics_loop_ == nullptr && pre_boot_loop_ != nullptr) {
              RETURN_IF_ERROR(WatchMetricsTimer(*pre_boot_loop_));
            }
            config_.metrics = a.config;
            return std::monostate();
          },
          [&](const SendCtrlAltDel&) -> absl::StatusOr<VmmResult> {
            if (vm_ == nullptr) {
              return absl::FailedPreconditionError("the microVM has not started yet");
            }
            RETURN_IF_ERROR(vm_->SendCtrlAltDel());
            return std::monostate();
          },
          [&](const FlushMetrics&) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(WriteMetrics());
            return std::monostate();
          },
          [&](const CreateSnapshot& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(WriteSnapshot(a));
            return std::monostate();
          },
          [&](const LoadSnapshot& a) -> absl::StatusOr<VmmResult> {
            RETURN_IF_ERROR(LoadFromSnapshot(a));
            return std::monostate();
          },
          [&](const PatchVmState& a) -> absl::StatusOr<VmmResult> {
            if (vm_ == nullptr) {
              return absl::FailedPreconditionError("the microVM has not started yet");
            }
            if (a.paused && !vm_->paused()) vm_->Pause();
            if (!a.paused && vm_->paused()) vm_->Resume();
            return std::monostate();
          },
      },
      action);
}

int Controller::Run(bool start_now) {
  // SIGINT and SIGTERM end a VMM that is still waiting for InstanceStart in
  // order too; the running Vm takes them over after that.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  UniqueFd signals(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));

  int code = kExitOk;
  if (start_now) {
    if (absl::Status st = Start(); !st.ok()) {
      LOG_ERROR("cannot build the microVM: %s", st.message());
      code = ExitCodeForBuildError(st);
    }
  }
  if (vm_ == nullptr && code == kExitOk && !start_now) {
    absl::StatusOr<EventLoop> loop = EventLoop::Create();
    if (!loop.ok()) return kExitGenericError;
    int stop_signal = 0;
    pre_boot_loop_ = &*loop;
    (void)WatchMetricsTimer(*loop);
    (void)loop->Add(wake_.get(), EPOLLIN, [this](uint32_t) { RunJobs(); });
    (void)loop->Add(signals.get(), EPOLLIN, [&](uint32_t) {
      signalfd_siginfo info;
      if (::read(signals.get(), &info, sizeof(info)) == sizeof(info)) stop_signal = info.ssi_signo;
    });
    LOG_INFO("waiting for the API to configure and start the microVM");
    while (vm_ == nullptr && stop_signal == 0) (void)loop->RunOnce(-1);
    if (stop_signal != 0) {
      LOG_INFO("received %s before the microVM started; exiting", strsignal(stop_signal));
      code = kExitSignalBase + stop_signal;
    }
    if (metrics_loop_ == &*loop) {
      loop->Remove(metrics_timer_.get());
      metrics_loop_ = nullptr;
    }
    pre_boot_loop_ = nullptr;
  }
  if (vm_ != nullptr) {
    if (absl::Status st = vm_->AddLoopHandler(wake_.get(), [this](uint32_t) { RunJobs(); });
        !st.ok()) {
      LOG_ERROR("%s", st.message());
    }
    if (absl::Status st = vm_->WatchOnLoop([this](EventLoop& loop) {
          return WatchMetricsTimer(loop);
        });
        !st.ok()) {
      LOG_ERROR("%s", st.message());
    }
    code = vm_->Run();
    if (metrics_fd_.valid()) (void)WriteMetrics();  // the final counters
  }
  // Anyone still waiting hears that it is over; later requests do at once.
  std::lock_guard lock(mu_);
  closed_ = true;
  for (Job& job : jobs_) job.result.set_value(absl::UnavailableError("the microVM has stopped"));
  jobs_.clear();
  return code;
}

}  // namespace ember
