#include "src/vmm/controller.h"

#include <fcntl.h>
#include <sched.h>
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
#include "src/common/file_lease.h"
#include "src/common/stop_signals.h"
#include "src/devices/virtio/net/net_device.h"
#include "src/vmm/builder.h"
#include "src/common/exit_code.h"
#include "src/common/signal_metrics.h"

namespace ember {

// Firecracker writes metrics every 60 seconds, and on FlushMetrics.
constexpr int kMetricsPeriodS = 60;

absl::Status Controller::OpenMetrics(const MetricsConfig& config) {
  // O_RDWR, as Firecracker: a FIFO nobody reads opens (the Go SDK makes
  // one and never reads it), and a full one drops lines instead of blocking.
  UniqueFd fd(open(config.metrics_path.c_str(),
                   O_RDWR | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("metrics.metrics_path ", config.metrics_path));
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return ErrnoStatus("timerfd_create");
  itimerspec every = {};
  every.it_interval.tv_sec = every.it_value.tv_sec = kMetricsPeriodS;
  if (timerfd_settime(timer.get(), 0, &every, nullptr) < 0) return ErrnoStatus("timerfd_settime");
  std::optional<std::string> id;
  if (config.emit_id) id = id_;
  // A fatal signal's last line goes there too.
  std::string labels = MetricsLabels(id, config.properties);
  if (labels.size() > kMaxLastLineLabels) {
    LOG_WARN("metrics: id and properties take %zu bytes; the line a fatal signal leaves has room "
             "for %zu and goes without them", labels.size(), kMaxLastLineLabels);
  }
  SetLastMetricsFd(fd.get(), std::move(labels));
  metrics_fd_ = std::move(fd);
  metrics_config_ = config;
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
  Metrics m;
  m.utc_timestamp_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  if (metrics_config_.emit_id) m.id = id_;
  m.properties = metrics_config_.properties;
  m.vm_state = VmState();
  AppendProcessMetrics(&m);
  m.Group("logger").counts.insert(m.Group("logger").counts.end(),
                                  {{"missed_metrics_count", metrics_missed_},
                                   {"metrics_fails", metrics_fails_}});
  if (runtime_) runtime_->vm().CollectMetrics(&m);
  const mmds::MmdsMetrics& mm = mmds_metrics_;
  m.Group("mmds").counts.insert(
      m.Group("mmds").counts.end(),
      {{"rx_accepted", mm.rx_accepted}, {"rx_accepted_err", mm.rx_accepted_err},
       {"rx_accepted_unusual", mm.rx_accepted_unusual}, {"rx_bad_eth", mm.rx_bad_eth},
       {"rx_invalid_token", mm.rx_invalid_token}, {"rx_no_token", mm.rx_no_token},
       {"rx_count", mm.rx_count}, {"tx_bytes", mm.tx_bytes}, {"tx_count", mm.tx_count},
       {"tx_errors", mm.tx_errors}, {"tx_frames", mm.tx_frames},
       {"connections_created", mm.connections_created},
       {"connections_destroyed", mm.connections_destroyed}});
  std::string line = codecs_.metrics_to_json(m) + "\n";
  // Best effort: a full FIFO loses a line rather than stalling the VMM.
  ssize_t n = ::write(metrics_fd_.get(), line.data(), line.size());
  if (n < 0 && errno != EAGAIN) {
    metrics_fails_++;
    return ErrnoStatus("write metrics");
  }
  if (n != static_cast<ssize_t>(line.size())) metrics_missed_++;
  return absl::OkStatus();
}

absl::Status Controller::ApplyLogger(const LoggerConfig& config) {
  if (!config.log_path.empty()) {
    // As the metrics: O_RDWR opens a FIFO without a reader; O_NONBLOCK
    // drops lines when it is full.
    int fd = open(config.log_path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC,
                  0600);
    if (fd < 0) return ErrnoStatus(absl::StrCat("logger.log_path ", config.log_path));
    // The sink's descriptor is never closed (a line may be going out on
    // another thread), so a later logger takes the first one's number:
    // dup3 swaps the file under it at once, and PUT /logger after PUT
    // /logger holds one descriptor, not one each. Only before the start:
    // the filters have no dup3.
    static int sink = -1;
    if (sink >= 0) {
      int swapped = dup3(fd, sink, O_CLOEXEC);
      close(fd);
      if (swapped < 0) return ErrnoStatus(absl::StrCat("logger.log_path ", config.log_path));
    } else {
      sink = fd;
    }
    SetLogSink(sink);  // again: the new file may be a socket where the old was not
  }
  // As Firecracker: a logger without a level puts it back to Info.
  std::optional<LogLevel> level = LogLevel::kInfo;
  if (config.level) level = ParseLogLevel(*config.level);
  if (!level) return absl::InvalidArgumentError("logger.level " + *config.level);
  SetLogLevel(*level);
  SetLogFormat(config.show_level, config.show_log_origin);
  if (config.module) SetLogModule(*config.module);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Controller>> Controller::Create(std::string id, VmConfig config,
                                                               ConsoleIo io, Codecs codecs) {
  if (!codecs.config_to_json || !codecs.config_from_json || !codecs.metrics_to_json) {
    return absl::InvalidArgumentError("the Controller needs every codec");
  }
  if (config.logger) RETURN_IF_ERROR(ApplyLogger(*config.logger));
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus("eventfd");
  std::optional<MetricsConfig> metrics = config.metrics;
  ASSIGN_OR_RETURN(mmds::DataStore store, mmds::DataStore::Create());
  std::unique_ptr<Controller> c(new Controller(std::move(id), std::move(config), io,
                                               std::move(codecs), std::move(wake),
                                               std::move(store)));
  if (metrics) RETURN_IF_ERROR(c->OpenMetrics(*metrics));
  c->ApplyMmdsConfig();
  return c;
}

absl::Status Controller::SetUpMmds(size_t size_limit, const std::optional<std::string>& metadata) {
  mmds_.set_size_limit(size_limit);
  if (metadata) return mmds_.Put(*metadata);
  return absl::OkStatus();
}

void Controller::ApplyMmdsConfig() {
  const std::optional<MmdsConfig>& m = preboot_.config().mmds;
  if (!m) return;
  mmds_.set_version(m->version == MmdsConfig::Version::kV2 ? mmds::Version::kV2
                                                           : mmds::Version::kV1);
  mmds_.set_imds_compat(m->imds_compat);
}

// Once the microVM runs, Firecracker finds the store through the
// interfaces that serve MMDS, and without one there is none. A body is
// read first, as Firecracker's API thread reads it before asking.
absl::Status Controller::CheckMmdsServed(const std::string* body) {
  if (!runtime_ || preboot_.config().mmds) return absl::OkStatus();
  if (body != nullptr) {
    rapidjson::Document doc;
    RETURN_IF_ERROR(mmds::ParseMmdsJson(*body, &doc));
  }
  return absl::InvalidArgumentError(
      "MMDS error: The MMDS data store is not initialized. No network interface of this "
      "microVM serves MMDS: name one in PUT /mmds/config before the start.");
}

absl::StatusOr<VmmResult> Controller::Do(const PutMmds& a) {
  RETURN_IF_ERROR(CheckMmdsServed(&a.json));
  RETURN_IF_ERROR(mmds_.Put(a.json));
  return std::monostate();
}

absl::StatusOr<VmmResult> Controller::Do(const PatchMmds& a) {
  RETURN_IF_ERROR(CheckMmdsServed(&a.json));
  RETURN_IF_ERROR(mmds_.Patch(a.json));
  return std::monostate();
}

absl::StatusOr<VmmResult> Controller::Do(const GetMmds&) {
  RETURN_IF_ERROR(CheckMmdsServed(nullptr));
  return MmdsDocument{mmds_.Get()};
}

absl::StatusOr<VmmResult> Controller::Do(const PutMmdsConfig& a) {
  if (runtime_) return runtime_->Handle(a);  // refused once running
  ASSIGN_OR_RETURN(VmmResult r, preboot_.Handle(a));
  ApplyMmdsConfig();
  return r;
}

absl::StatusOr<VmmResult> Controller::Do(const PutNetworkInterface& a) {
  if (runtime_) return runtime_->Handle(a);  // refused once running
  RETURN_IF_ERROR(preboot_.CheckNetworkInterface(a.config));
  auto held = taps_.find(a.config.iface_id);
  bool reuse = held != taps_.end() && held->second.name() == a.config.host_dev_name;
  std::optional<virtio::net::Tap> tap;
  if (!reuse) {
    ASSIGN_OR_RETURN(tap, virtio::net::NetDevice::OpenTap(a.config));
  }
  ASSIGN_OR_RETURN(VmmResult r, preboot_.Handle(a));
  // Only now is the old TAP let go: a refused PUT changes nothing.
  if (tap) taps_.insert_or_assign(a.config.iface_id, std::move(*tap));
  return r;
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
    // A start's vCPUs wake once its answer is on its way: woken first, a
    // vCPU thread took the CPU the client was woken on, for a whole time
    // slice (3 ms to the 204 on a 2-core host). This thread then yields,
    // so that its own start-up does not keep the vCPU waiting instead
    // (before Vm::Run installs this thread's filter, which has no
    // sched_yield).
    if (runtime_ && runtime_->vm().StartVcpus()) sched_yield();
  }
}

const char* Controller::VmState() const {
  if (!runtime_) return "Not started";
  return runtime_->vm().paused() ? "Paused" : "Running";
}

absl::StatusOr<VmmResult> Controller::Handle(const VmmAction& action) {
  // A snapshot brings its own VM: the prepared one's memory goes first.
  if (std::holds_alternative<LoadSnapshot>(action)) prepared_.reset();
  return std::visit([this](const auto& a) { return Do(a); }, action);
}

absl::StatusOr<VmmResult> Controller::Do(const GetInstanceInfo&) {
  return InstanceInfo{id_, VmState(), kVersion};
}

// Without metrics there is nothing to write, and Firecracker answers 204.
// Before the start it refuses; Ember writes the line then too.
absl::StatusOr<VmmResult> Controller::Do(const FlushMetrics&) {
  if (metrics_fd_.valid()) RETURN_IF_ERROR(WriteMetrics());
  return std::monostate();
}

absl::StatusOr<VmmResult> Controller::Do(const PutLogger& a) {
  if (runtime_) return runtime_->Handle(a);  // refused once running
  RETURN_IF_ERROR(ApplyLogger(a.config));
  preboot_.config().logger = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> Controller::Do(const PutMetrics& a) {
  if (runtime_) return runtime_->Handle(a);  // refused once running
  if (metrics_fd_.valid()) {
    return absl::FailedPreconditionError(
        "Metrics error: Cannot initialize the metrics system due to bad user input: "
        "Reinitialization of metrics not allowed.");
  }
  RETURN_IF_ERROR(OpenMetrics(a.config));
  if (metrics_loop_ == nullptr && pre_boot_loop_ != nullptr) {
    RETURN_IF_ERROR(WatchMetricsTimer(*pre_boot_loop_));
  }
  preboot_.config().metrics = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> Controller::Do(const InstanceStart& a) {
  if (runtime_) return runtime_->Handle(a);  // already running
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
                   BuildForBoot(preboot_.config(), io_, {&mmds_, &mmds_metrics_},
                                std::exchange(prepared_, std::nullopt), &taps_));
  taps_.clear();  // the devices hold their own
  Started(std::move(vm));
  return std::monostate();
}

void Controller::PrepareAhead() {
  const VmConfig& config = preboot_.config();
  if (runtime_ || !config.boot_source || (prepared_ && prepared_->Matches(config))) return;
  std::pair<MachineConfig, BootSourceConfig> key(config.machine, *config.boot_source);
  if (prepare_failed_ == key) return;
  prepared_.reset();
  absl::Time begin = absl::Now();
  absl::StatusOr<PreparedVm> prepared = PreparedVm::Prepare(config, &spare_);
  if (prepared.ok()) {
    LOG_INFO("prepared ahead of the start in %.3f ms: %d MiB, %d vCPUs, kernel loaded",
             absl::ToDoubleMilliseconds(absl::Now() - begin), config.machine.mem_size_mib,
             config.machine.vcpu_count);
    prepared_ = std::move(*prepared);
    prepare_failed_.reset();
  } else {
    // InstanceStart tries again and reports it.
    LOG_DEBUG("cannot prepare the microVM yet: %s", prepared.status().message());
    prepare_failed_ = std::move(key);
  }
}

void Controller::Started(std::unique_ptr<Vm> vm) {
  spare_.reset();  // one KVM VM per process once one runs
  runtime_.emplace(preboot_.config(), std::move(vm), codecs_.config_to_json);
}

int Controller::WaitForStart() {
  // SIGINT and SIGTERM end a VMM that is still waiting for InstanceStart in
  // order too; the running Vm takes them over after that.
  absl::StatusOr<UniqueFd> signals = StopSignalFd();
  absl::StatusOr<EventLoop> loop = EventLoop::Create();
  if (!signals.ok() || !loop.ok()) return kExitGenericError;
  int stop_signal = 0;
  pre_boot_loop_ = &*loop;
  (void)WatchMetricsTimer(*loop);
  (void)loop->Add(wake_.get(), EPOLLIN, [this](uint32_t) { RunJobs(); });
  (void)loop->Add(signals->get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo info;
    if (::read(signals->get(), &info, sizeof(info)) == sizeof(info)) stop_signal = info.ssi_signo;
  });
  // Someone would write a file a VM maps: the kernel or initrd of a
  // prepared VM (its pages are copied, and the start prepares again, as
  // Matches sees the new stamp), or of one that started in this same loop
  // turn, whose Run would not see this signal again.
  absl::StatusOr<UniqueFd> leases = LeaseSignalFd();
  if (leases.ok()) {
    (void)loop->Add(leases->get(), EPOLLIN, [&](uint32_t) {
      DrainSignalFd(leases->get());
      if (prepared_ && !prepared_->CopyBrokenLeases()) prepared_.reset();
      if (runtime_) runtime_->vm().CopyBrokenLeases();
    });
  }
  LOG_INFO("waiting for the API to configure and start the microVM");
  // Before the first request is served (one arriving now waits 0.2 ms). A
  // failure shows again, with its reason, when the VM is made.
  if (absl::StatusOr<VmShell> shell = VmShell::Create(); shell.ok()) {
    spare_ = std::move(*shell);
  } else {
    LOG_DEBUG("no KVM VM made ahead: %s", shell.status().message());
  }
  while (!runtime_ && stop_signal == 0) {
    (void)loop->RunOnce(-1);
    PrepareAhead();
  }
  if (metrics_loop_ == &*loop) {
    loop->Remove(metrics_timer_.get());
    metrics_loop_ = nullptr;
  }
  pre_boot_loop_ = nullptr;
  if (stop_signal == 0) return kExitOk;
  LOG_INFO("received %s before the microVM started; exiting", strsignal(stop_signal));
  return kExitSignalBase + stop_signal;
}

int Controller::Run(bool start_now) {
  int code = kExitOk;
  if (start_now) {
    if (absl::StatusOr<VmmResult> st = Do(InstanceStart{}); !st.ok()) {
      LOG_ERROR("cannot build the microVM: %s", st.status().message());
      code = ExitCodeForBuildError(st.status());
    }
  } else {
    code = WaitForStart();
  }
  if (runtime_) {
    Vm& vm = runtime_->vm();
    if (absl::Status st = vm.AddLoopHandler(wake_.get(), [this](uint32_t) { RunJobs(); });
        !st.ok()) {
      LOG_ERROR("%s", st.message());
    }
    if (absl::Status st = WatchMetricsTimer(vm.loop()); !st.ok()) LOG_ERROR("%s", st.message());
    code = vm.Run();
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
