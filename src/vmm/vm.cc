#include "src/vmm/vm.h"

#include <signal.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/clock.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/devices/virtio/balloon/balloon_device.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/net/net_device.h"
#include "src/seccomp/seccomp.h"
#include "src/vmm/arch/x86_64/cpuid.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/arch/x86_64/mptable.h"
#include "src/common/exit_code.h"
#include "src/vmm/host.h"

namespace ember {
namespace {

// The configuration's limit must fit the MP table.
static_assert(kMaxVcpus <= x86_64::kMaxVcpus);

// Virtio devices take IOAPIC pins from here up; below are the ISA devices
// (PIT 0, keyboard 1, serial 4).
constexpr uint32_t kVirtioFirstIrq = 5;

absl::StatusOr<std::vector<MemoryRange>> GuestRanges(uint64_t mem_size_mib) {
  ASSIGN_OR_RETURN(uint64_t host_mib, HostMemoryMib());
  if (mem_size_mib > host_mib) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "machine-config.mem_size_mib %d exceeds the host's %d MiB of RAM", mem_size_mib,
        host_mib));
  }
  return x86_64::RamRanges(mem_size_mib << 20);
}

std::string GuestCmdline(const BootSourceConfig& boot) {
  std::string args = boot.boot_args.value_or(kDefaultBootArgs);
  bool pvm = IsPvmHost();
  std::string with_host = AddHostBootArgs(args, pvm);
  if (with_host != args) {
    LOG_INFO("PVM host (KVM in software): added guest boot args \"%s\"", kPvmGuestArgs);
  }
  return with_host;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vm>> Vm::CreateBare(const MemoryMaker& make_memory,
                                                   bool track_dirty_pages) {
  ASSIGN_OR_RETURN(Kvm kvm, Kvm::Open());
  ASSIGN_OR_RETURN(VmFd vm_fd, kvm.CreateVm());
  RETURN_IF_ERROR(vm_fd.SetTssAddr(x86_64::kKvmTssAddr));
  RETURN_IF_ERROR(vm_fd.SetIdentityMapAddr(x86_64::kKvmIdentityMapAddr));
  // Memory before the irqchip: once an irqchip exists, registering a memory
  // slot costs milliseconds instead of microseconds (measured on PVM).
  ASSIGN_OR_RETURN(GuestMemory memory, make_memory());
  if (track_dirty_pages) memory.EnableDirtyTracking();
  for (size_t slot = 0; slot < memory.regions().size(); slot++) {
    const GuestRegion& r = memory.regions()[slot];
    RETURN_IF_ERROR(
        vm_fd.SetUserMemoryRegion(slot, r.guest_addr, r.size, r.host, track_dirty_pages));
  }
  RETURN_IF_ERROR(vm_fd.CreateIrqchip());
  RETURN_IF_ERROR(vm_fd.CreatePit2());
  ASSIGN_OR_RETURN(EventLoop loop, EventLoop::Create());
  ASSIGN_OR_RETURN(std::unique_ptr<VmExit> exit, VmExit::Create());
  return std::unique_ptr<Vm>(new Vm(std::move(kvm), std::move(vm_fd), std::move(memory),
                                    std::move(loop), std::move(exit)));
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const VmConfig& config, ConsoleIo io) {
  if (!config.boot_source) {
    return absl::InvalidArgumentError("boot-source is missing: a kernel_image_path is required");
  }
  RETURN_IF_ERROR(ValidateMachineConfig(config.machine));
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm, CreateBare([&]() -> absl::StatusOr<GuestMemory> {
                     ASSIGN_OR_RETURN(std::vector<MemoryRange> ranges,
                                      GuestRanges(config.machine.mem_size_mib));
                     return GuestMemory::Create(ranges);
                   },
                   config.machine.track_dirty_pages));
  std::string cmdline = GuestCmdline(*config.boot_source);
  RETURN_IF_ERROR(vm->AttachDevices(config, &cmdline));
  ASSIGN_OR_RETURN(BootEntry entry, LoadGuest(vm->memory_, *config.boot_source, cmdline,
                                              config.machine.vcpu_count));
  // Last of the configuration checks: it may create serial_out_path.
  RETURN_IF_ERROR(vm->AttachLegacyDevices(io, config.serial));
  if (config.boot_timer) {
    vm->boot_timer_ = std::make_shared<BootTimer>();
    RETURN_IF_ERROR(vm->mmio_.Insert(vm->boot_timer_, BootTimer::kBase, BootTimer::kSize));
  }
  RETURN_IF_ERROR(vm->CreateVcpus(config.machine.vcpu_count, entry));
  return vm;
}

Vm::~Vm() {
  for (auto& v : vcpus_) v->Stop();
  for (auto& v : vcpus_) v->Join();
}

absl::Status Vm::AttachLegacyDevices(ConsoleIo io, const SerialConfig& serial) {
  if (!serial.serial_out_path.empty()) {
    // O_NONBLOCK: a FIFO without a reader fails here rather than hanging,
    // and a full one drops output rather than stalling the guest.
    serial_out_.reset(open(serial.serial_out_path.c_str(),
                           O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_CLOEXEC, 0600));
    if (!serial_out_.valid()) {
      return ErrnoStatus(absl::StrCat("serial.serial_out_path ", serial.serial_out_path));
    }
    io.out_fd = serial_out_.get();
  }
  serial_irq_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!serial_irq_.valid()) return ErrnoStatus("eventfd");
  RETURN_IF_ERROR(vm_.RegisterIrqfd(serial_irq_.get(), Serial::kCom1Irq));
  int irq_fd = serial_irq_.get();
  serial_ = std::make_shared<Serial>(io.out_fd, [irq_fd] {
    uint64_t one = 1;
    (void)!::write(irq_fd, &one, sizeof(one));
  });
  RETURN_IF_ERROR(pio_.Insert(serial_, Serial::kCom1Base, Serial::kRegisterCount));

  keyboard_irq_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!keyboard_irq_.valid()) return ErrnoStatus("eventfd");
  RETURN_IF_ERROR(vm_.RegisterIrqfd(keyboard_irq_.get(), I8042::kKeyboardIrq));
  VmExit* exit = exit_.get();
  int kbd_fd = keyboard_irq_.get();
  i8042_ = std::make_shared<I8042>(
      [exit] {
        // Linux writes the reset command more than once; say it once.
        if (exit->Request(kExitOk)) LOG_INFO("guest reset through the i8042; stopping the VM");
      },
      [kbd_fd] {
        uint64_t one = 1;
        (void)!::write(kbd_fd, &one, sizeof(one));
      });
  RETURN_IF_ERROR(pio_.Insert(i8042_, I8042::kBase, I8042::kSize));

  if (io.in_fd >= 0) {
    // epoll refuses regular files such as /dev/null: then there is no input.
    absl::Status st = loop_.Add(io.in_fd, EPOLLIN, [this](uint32_t ev) { OnConsoleInput(ev); });
    if (st.ok()) console_in_ = io.in_fd;
  }
  return loop_.Add(exit_->fd(), EPOLLIN, [](uint32_t) {});
}

absl::Status Vm::AttachDrives(const std::vector<DriveConfig>& drives, std::string* cmdline) {
  std::vector<const DriveConfig*> order;
  for (const DriveConfig& d : drives) {
    if (d.is_root_device) order.insert(order.begin(), &d);  // root is /dev/vda
    else order.push_back(&d);
  }
  for (const DriveConfig* d : order) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::block::BlockDevice> dev,
                     virtio::block::BlockDevice::Create(*d));
    RETURN_IF_ERROR(AttachVirtio(std::move(dev), cmdline));
  }
  if (!order.empty() && order.front()->is_root_device) {
    const DriveConfig& root = *order.front();
    absl::StrAppend(cmdline, root.partuuid.empty() ? " root=/dev/vda"
                                                   : absl::StrCat(" root=PARTUUID=", root.partuuid),
                    root.is_read_only ? " ro" : " rw");
  }
  return absl::OkStatus();
}

absl::Status Vm::AttachNet(const std::vector<NetConfig>& net, std::string* cmdline) {
  for (const NetConfig& n : net) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::net::NetDevice> dev, virtio::net::NetDevice::Create(n));
    RETURN_IF_ERROR(AttachVirtio(std::move(dev), cmdline));
  }
  return absl::OkStatus();
}

absl::Status Vm::AttachVirtio(std::unique_ptr<virtio::VirtioDevice> device, std::string* cmdline) {
  const size_t index = virtio_.size();
  const uint32_t irq = kVirtioFirstIrq + index;
  if (irq >= x86_64::kIoapicPins) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "too many virtio devices: at most %d", x86_64::kIoapicPins - kVirtioFirstIrq));
  }
  const uint64_t base = x86_64::kMmioDevicesStart + index * virtio::MmioTransport::kWindowSize;
  UniqueFd irq_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!irq_fd.valid()) return ErrnoStatus("eventfd");
  RETURN_IF_ERROR(vm_.RegisterIrqfd(irq_fd.get(), irq));
  auto transport =
      std::make_shared<virtio::MmioTransport>(std::move(device), &memory_, std::move(irq_fd));
  RETURN_IF_ERROR(mmio_.Insert(transport, base, virtio::MmioTransport::kWindowSize));

  std::vector<int> fds;
  for (uint32_t q = 0; q < transport->num_queues(); q++) {
    UniqueFd evt(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!evt.valid()) return ErrnoStatus("eventfd");
    RETURN_IF_ERROR(vm_.RegisterIoeventfd(
        evt.get(), base + virtio::MmioTransport::kQueueNotifyOffset, 4, q));
    int fd = evt.get();
    RETURN_IF_ERROR(loop_.Add(fd, EPOLLIN, [transport, fd, q](uint32_t) {
      uint64_t count;
      (void)!::read(fd, &count, sizeof(count));
      transport->Notify(q);
    }));
    fds.push_back(fd);
    queue_events_.push_back(std::move(evt));
  }
  // Notifications KVM did not catch (a wrong size, say) still end up on the
  // VMM thread, through the same eventfds.
  transport->set_notify_fallback([fds](uint32_t q) {
    if (q >= fds.size()) return;
    uint64_t one = 1;
    (void)!::write(fds[q], &one, sizeof(one));
  });
  if (int fd = transport->device().backend_fd(); fd >= 0) {
    RETURN_IF_ERROR(loop_.Add(fd, transport->device().backend_events(),
                              [transport](uint32_t events) { transport->NotifyBackend(events); }));
  }
  virtio_.push_back(transport);
  absl::StrAppend(cmdline, absl::StrFormat(" virtio_mmio.device=4K@%#x:%d", base, irq));
  return absl::OkStatus();
}

absl::Status Vm::AttachDevices(const VmConfig& config, std::string* cmdline) {
  RETURN_IF_ERROR(ValidateDrives(config.drives));
  RETURN_IF_ERROR(ValidateNet(config.net));
  RETURN_IF_ERROR(AttachDrives(config.drives, cmdline));
  RETURN_IF_ERROR(AttachNet(config.net, cmdline));
  if (config.balloon) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::balloon::BalloonDevice> balloon,
                     virtio::balloon::BalloonDevice::Create(*config.balloon));
    RETURN_IF_ERROR(AttachVirtio(std::move(balloon), cmdline));
    balloon_ = virtio_.back().get();
  }
  return absl::OkStatus();
}

absl::Status Vm::AddLoopHandler(int fd, EventLoop::Handler handler) {
  return loop_.Add(fd, EPOLLIN, std::move(handler));
}

absl::Status Vm::SendCtrlAltDel() {
  if (!i8042_->SendCtrlAltDel()) {
    return absl::FailedPreconditionError(
        "the guest has not enabled its keyboard: no driver would see Ctrl-Alt-Del");
  }
  LOG_INFO("sent Ctrl-Alt-Del to the guest");
  return absl::OkStatus();
}

absl::Status Vm::SwapDrive(const std::string& drive_id, const std::string& path) {
  for (const auto& t : virtio_) {
    absl::Status st = absl::NotFoundError("");
    bool found = t->WithDevice([&](virtio::VirtioDevice& d) {
      auto* block = dynamic_cast<virtio::block::BlockDevice*>(&d);
      if (block == nullptr || block->config().drive_id != drive_id) return false;
      st = block->SwapBacking(path);
      return true;
    });
    if (found) return st;
  }
  return absl::InvalidArgumentError(absl::StrCat("there is no drive '", drive_id, "'"));
}

void Vm::CollectMetrics(Metrics* metrics) {
  metrics->serial_dropped_input = serial_->dropped_input();
  for (const auto& t : virtio_) {
    t->WithDevice([metrics](virtio::VirtioDevice& d) {
      std::vector<std::pair<std::string, uint64_t>> counters;
      d.AppendMetrics(&counters);
      metrics->devices.emplace_back(d.metrics_name(), std::move(counters));
    });
  }
}

void Vm::Pause() {
  for (auto& v : vcpus_) v->Pause();
  paused_ = true;
  LOG_INFO("VM paused");
}

absl::StatusOr<MachineState> Vm::SaveMachineState() const {
  if (!paused_) return absl::FailedPreconditionError("the VM must be paused to save its state");
  MachineState state;
  ASSIGN_OR_RETURN(std::vector<uint32_t> msrs, SaveableMsrs(kvm_.fd()));
  ASSIGN_OR_RETURN(state.vm, SaveVmState(vm_.fd()));
  for (const auto& v : vcpus_) {
    ASSIGN_OR_RETURN(VcpuState s, SaveVcpuState(v->fd().fd(), msrs));
    state.vcpus.push_back(std::move(s));
  }
  return state;
}

absl::Status Vm::RestoreMachineState(const MachineState& state) {
  if (state.vcpus.size() != vcpus_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the saved state has %d vCPUs, this VM %d", state.vcpus.size(), vcpus_.size()));
  }
  RETURN_IF_ERROR(RestoreVmState(vm_.fd(), state.vm));
  for (size_t i = 0; i < vcpus_.size(); i++) {
    RETURN_IF_ERROR(RestoreVcpuState(vcpus_[i]->fd().fd(), state.vcpus[i]));
  }
  return absl::OkStatus();
}

void Vm::Resume() {
  for (auto& v : vcpus_) v->Resume();
  paused_ = false;
  LOG_INFO("VM resumed");
}

absl::Status Vm::SetBalloonTarget(uint64_t amount_mib) {
  if (balloon_ == nullptr) return absl::InvalidArgumentError("there is no balloon device");
  balloon_->WithDevice([amount_mib](virtio::VirtioDevice& d) {
    static_cast<virtio::balloon::BalloonDevice&>(d).SetTarget(amount_mib);
  });
  return absl::OkStatus();
}

absl::Status Vm::SetBalloonStatsInterval(uint32_t seconds) {
  if (balloon_ == nullptr) return absl::InvalidArgumentError("there is no balloon device");
  return balloon_->WithDevice([seconds](virtio::VirtioDevice& d) {
    return static_cast<virtio::balloon::BalloonDevice&>(d).SetStatsInterval(seconds);
  });
}

absl::StatusOr<BalloonStats> Vm::GetBalloonStats() {
  if (balloon_ == nullptr) return absl::InvalidArgumentError("there is no balloon device");
  return balloon_->WithDevice([](virtio::VirtioDevice& d) {
    auto& b = static_cast<virtio::balloon::BalloonDevice&>(d);
    if (b.stats_polling_interval_s() == 0) {
      return absl::StatusOr<BalloonStats>(absl::InvalidArgumentError(
          "balloon statistics are off: set stats_polling_interval_s"));
    }
    return absl::StatusOr<BalloonStats>(BalloonStats{b.target_pages(), b.actual_pages(), b.stats()});
  });
}

void Vm::OnConsoleInput(uint32_t) {
  uint8_t buf[256];
  ssize_t n = ::read(console_in_, buf, sizeof(buf));
  if (n <= 0) {
    loop_.Remove(console_in_);  // EOF or error: no more console input
    return;
  }
  serial_->EnqueueInput(std::span(buf, n));
}

absl::Status Vm::CreateVcpus(uint32_t count, const BootEntry& entry) {
  ASSIGN_OR_RETURN(CpuidEntries supported, kvm_.SupportedCpuid());
  for (uint32_t i = 0; i < count; i++) {
    ASSIGN_OR_RETURN(VcpuFd fd, vm_.CreateVcpu(i));
    RETURN_IF_ERROR(fd.SetCpuid(x86_64::FilterCpuid(supported, i, count)));
    RETURN_IF_ERROR(x86_64::SetupVcpuRegs(fd, entry.protocol, entry.entry));
    vcpus_.push_back(std::make_unique<Vcpu>(i, std::move(fd), &pio_, &mmio_, exit_.get()));
  }
  return absl::OkStatus();
}

absl::Status Vm::StopOnSignals() {
  // Blocked here, before the vCPU threads exist, so they inherit the mask
  // and the signals arrive only through the signalfd.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return ErrnoStatus("pthread_sigmask");
  signal_fd_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_.valid()) return ErrnoStatus("signalfd");
  return loop_.Add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo info;
    if (::read(signal_fd_.get(), &info, sizeof(info)) != sizeof(info)) return;
    LOG_INFO("received %s; stopping the VM", strsignal(info.ssi_signo));
    exit_->Request(kExitSignalBase + static_cast<int>(info.ssi_signo));
  });
}

int Vm::Run() {
  Vcpu::InstallKickHandler();
  if (absl::Status st = StopOnSignals(); !st.ok()) {
    LOG_ERROR("cannot handle SIGINT and SIGTERM: %s", st.message());
    return kExitGenericError;
  }
  LOG_INFO("ready to boot: %d vCPUs, %d MiB; %.3f ms process CPU", vcpus_.size(),
           memory_.total_size() >> 20, ProcessCpuMs());
  if (boot_timer_) boot_timer_->Start(MonotonicMs());
  for (auto& v : vcpus_) v->Start();
  // The guest can reach the VMM thread's code from here on.
  if (absl::Status st = seccomp::InstallThreadFilter("vmm"); !st.ok()) {
    LOG_ERROR("%s", st.message());
    exit_->Request(kExitGenericError);
  }
  while (!exit_->requested()) {
    absl::Status st = loop_.RunOnce(-1);
    if (!st.ok()) {
      LOG_ERROR("event loop: %s", st.message());
      exit_->Request(kExitGenericError);
    }
  }
  for (auto& v : vcpus_) v->Stop();
  for (auto& v : vcpus_) v->Join();
  serial_->Flush();
  LOG_INFO("VM stopped, all vCPU threads joined; exit code %d", exit_->code());
  return exit_->code();
}

}  // namespace ember
