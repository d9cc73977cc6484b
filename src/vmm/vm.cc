#include "src/vmm/vm.h"

#include <signal.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "src/common/clock.h"
#include "src/common/errno_status.h"
#include "src/common/exit_code.h"
#include "src/common/log.h"
#include "src/common/program_pages.h"
#include "src/common/status_macros.h"
#include "src/common/stop_signals.h"
#include "src/seccomp/seccomp.h"
#include "src/vmm/arch/x86_64/cpu_template.h"
#include "src/vmm/arch/x86_64/cpuid.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/host.h"

namespace ember {

absl::StatusOr<VmShell> VmShell::Create() {
  ASSIGN_OR_RETURN(Kvm kvm, Kvm::Open());
  ASSIGN_OR_RETURN(VmFd vm, kvm.CreateVm());
  RETURN_IF_ERROR(vm.SetTssAddr(x86_64::kKvmTssAddr));
  RETURN_IF_ERROR(vm.SetIdentityMapAddr(x86_64::kKvmIdentityMapAddr));
  return VmShell(std::move(kvm), std::move(vm));
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const MemoryMaker& make_memory,
                                               bool track_dirty_pages,
                                               std::optional<VmShell> shell) {
  ASSIGN_OR_RETURN(GuestMemory memory, make_memory());
  return Create(memory, track_dirty_pages, std::move(shell));
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(GuestMemory& memory, bool track_dirty_pages,
                                               std::optional<VmShell> shell) {
  if (!shell) {
    ASSIGN_OR_RETURN(shell, VmShell::Create());
  }
  Kvm kvm = std::move(shell->kvm_);
  VmFd vm_fd = std::move(shell->vm_);
  // Memory before the irqchip: once an irqchip exists, registering a memory
  // slot costs milliseconds instead of microseconds (measured on PVM).
  if (track_dirty_pages && !memory.dirty_tracking()) memory.EnableDirtyTracking();
  for (size_t slot = 0; slot < memory.regions().size(); slot++) {
    const GuestRegion& r = memory.regions()[slot];
    RETURN_IF_ERROR(
        vm_fd.SetUserMemoryRegion(slot, r.guest_addr, r.size, r.host, track_dirty_pages));
  }
  RETURN_IF_ERROR(vm_fd.CreateIrqchip());
  RETURN_IF_ERROR(vm_fd.CreatePit2());
  ASSIGN_OR_RETURN(EventLoop loop, EventLoop::Create());
  ASSIGN_OR_RETURN(std::unique_ptr<VmExit> exit, VmExit::Create());
  RETURN_IF_ERROR(loop.Add(exit->fd(), EPOLLIN, [](uint32_t) {}));
  // Nothing fails after the memory moves: on failure it stays the
  // caller's, whose image copier may still be writing to it.
  return std::unique_ptr<Vm>(new Vm(std::move(kvm), std::move(vm_fd), std::move(memory),
                                    std::move(loop), std::move(exit)));
}

Vm::~Vm() {
  for (auto& v : vcpus_) v->Stop();
  for (auto& v : vcpus_) v->Join();
}

absl::Status Vm::CreateVcpus(uint32_t count, std::optional<BootEntry> entry,
                             const CpuidEntries* supported, const CpuTemplate* cpu_template,
                             bool smt) {
  if (entry && supported == nullptr) {
    return absl::InvalidArgumentError("a booting VM's vCPUs need KVM's CPUID list");
  }
  CpuidEntries templated;
  if (entry && cpu_template != nullptr) {
    RETURN_IF_ERROR(x86_64::CheckKvmCapabilities(kvm_, *cpu_template));
    ASSIGN_OR_RETURN(templated, x86_64::ApplyCpuidTemplate(*supported, *cpu_template));
    supported = &templated;
  }
  std::vector<kvm_msr_entry> template_msrs;
  for (uint32_t i = 0; i < count; i++) {
    ASSIGN_OR_RETURN(VcpuFd fd, vm_.CreateVcpu(i));
    if (entry) {
      RETURN_IF_ERROR(fd.SetCpuid(x86_64::FilterCpuid(*supported, i, count, smt)));
      // vCPU 0's values, read once its CPUID is set, for every vCPU.
      if (i == 0 && cpu_template != nullptr) {
        ASSIGN_OR_RETURN(template_msrs, x86_64::TemplateMsrs(fd.fd(), *cpu_template));
        for (const kvm_msr_entry& m : template_msrs) AddExtraMsr(m.index);
      }
      RETURN_IF_ERROR(x86_64::SetTemplateMsrs(fd, template_msrs));
      RETURN_IF_ERROR(x86_64::SetupVcpuRegs(fd, entry->protocol, entry->entry));
    }
    vcpus_.push_back(std::make_unique<Vcpu>(i, std::move(fd), &devices_.pio(), &devices_.mmio(),
                                            exit_.get()));
  }
  // Their threads wait for Run: starting one costs a wake-up then.
  Vcpu::InstallKickHandler();
  // A restored VM runs as soon as it is built; the first vCPU's thread
  // waits for that awake (0.1-0.2 ms less to its first KVM_RUN here).
  for (size_t i = 0; i < vcpus_.size(); i++) vcpus_[i]->Spawn(!entry && i == 0);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> HotplugRegionStart(const GuestMemory& memory,
                                            const MemoryHotplugConfig& config) {
  // The device wants its region on a block too (blocks are powers of 2).
  const uint64_t align = std::max(uint64_t{2} << 30, uint64_t{config.block_size_mib} << 20);
  uint64_t start = std::max(x86_64::kMmioHoleEnd, memory.end());
  start = (start + align - 1) / align * align;
  uint64_t size = uint64_t{config.total_size_mib} << 20;
  uint32_t bits = HostPhysicalAddressBits();
  if (start + size > (uint64_t{1} << bits)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory-hotplug: total_size_mib %d at %#x ends past the %d-bit physical addresses of "
        "this host's CPUs",
        config.total_size_mib, start, bits));
  }
  return start;
}

absl::Status Vm::CheckMemorySlots(const MemoryHotplugConfig& config, size_t other_slots) const {
  uint64_t slots = config.total_size_mib / config.slot_size_mib;
  int max_slots = kvm_.CheckExtension(KVM_CAP_NR_MEMSLOTS);
  if (max_slots > 0 && memory_.regions().size() + other_slots + slots > uint64_t(max_slots)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory-hotplug: %d slots of %d MiB are more than KVM's %d memory slots allow; use a "
        "larger slot_size_mib or a smaller total_size_mib",
        slots, config.slot_size_mib, max_slots));
  }
  return absl::OkStatus();
}

absl::Status Vm::ReserveHotplugMemory(const MemoryHotplugConfig& config, size_t other_slots) {
  RETURN_IF_ERROR(ValidateMemoryHotplug(config));
  RETURN_IF_ERROR(CheckMemorySlots(config, other_slots));
  ASSIGN_OR_RETURN(uint64_t start, HotplugRegionStart(memory_, config));
  return memory_.AddHotplugRegion(start, uint64_t{config.total_size_mib} << 20,
                                  uint64_t{config.slot_size_mib} << 20);
}

absl::Status Vm::AddLoopHandler(int fd, EventLoop::Handler handler) {
  return loop_.Add(fd, EPOLLIN, std::move(handler));
}

void Vm::CollectMetrics(Metrics* m) {
  LatencyMetric io_in, io_out, mmio_read, mmio_write;
  uint64_t failures = 0;
  for (const auto& v : vcpus_) {
    const VcpuMetrics& vm = v->metrics();
    io_in.Merge(vm.exit_io_in);
    io_out.Merge(vm.exit_io_out);
    mmio_read.Merge(vm.exit_mmio_read);
    mmio_write.Merge(vm.exit_mmio_write);
    failures += vm.failures.load(std::memory_order_relaxed);
  }
  MetricGroup& g = m->Group("vcpu");
  g.counts.insert(g.counts.end(), {{"exit_io_in", io_in.count()},
                                   {"exit_io_out", io_out.count()},
                                   {"exit_mmio_read", mmio_read.count()},
                                   {"exit_mmio_write", mmio_write.count()},
                                   {"failures", failures}});
  io_in.Append("exit_io_in_agg", &g.counts, &g.levels);
  io_out.Append("exit_io_out_agg", &g.counts, &g.levels);
  mmio_read.Append("exit_mmio_read_agg", &g.counts, &g.levels);
  mmio_write.Append("exit_mmio_write_agg", &g.counts, &g.levels);
  latencies_.AppendTo(m);
  m->Group("vmm").counts.emplace_back("device_events", loop_.events());
  devices_.CollectMetrics(m);
}

void Vm::Pause() {
  for (auto& v : vcpus_) v->Pause();
  paused_ = true;
  LOG_INFO("VM paused");
}

void Vm::Resume() {
  for (auto& v : vcpus_) v->Resume();
  paused_ = false;
  LOG_INFO("VM resumed");
}

void Vm::AddExtraMsr(uint32_t index) {
  if (std::find(extra_msrs_.begin(), extra_msrs_.end(), index) == extra_msrs_.end()) {
    extra_msrs_.push_back(index);
  }
}

absl::StatusOr<snapshot::MachineState> Vm::SaveMachineState() const {
  if (!paused_) return absl::FailedPreconditionError("the VM must be paused to save its state");
  snapshot::MachineState state;
  ASSIGN_OR_RETURN(std::vector<uint32_t> msrs, SaveableMsrs(kvm_.fd()));
  for (uint32_t extra : extra_msrs_) {
    if (std::find(msrs.begin(), msrs.end(), extra) == msrs.end()) msrs.push_back(extra);
  }
  ASSIGN_OR_RETURN(state.vm, SaveVmState(vm_.fd()));
  for (const auto& v : vcpus_) {
    ASSIGN_OR_RETURN(VcpuState s, SaveVcpuState(v->fd().fd(), msrs));
    state.vcpus.push_back(std::move(s));
  }
  return state;
}

absl::Status Vm::RestoreMachineState(const snapshot::MachineState& state) {
  if (state.vcpus.size() != vcpus_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the saved state has %d vCPUs, this VM %d", state.vcpus.size(), vcpus_.size()));
  }
  RETURN_IF_ERROR(RestoreVmState(vm_.fd(), state.vm));
  for (size_t i = 0; i < vcpus_.size(); i++) {
    RETURN_IF_ERROR(RestoreVcpuState(vcpus_[i]->fd().fd(), state.vcpus[i]));
  }
  // The next snapshot saves every MSR this one had.
  if (!state.vcpus.empty()) {
    for (const kvm_msr_entry& m : state.vcpus[0].msrs) AddExtraMsr(m.index);
  }
  return absl::OkStatus();
}

absl::Status Vm::StopOnSignals() {
  // Blocked by main.cc before any thread exists, so the signals arrive
  // only through the signalfd.
  ASSIGN_OR_RETURN(signal_fd_, StopSignalFd());
  return loop_.Add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo info;
    if (::read(signal_fd_.get(), &info, sizeof(info)) != sizeof(info)) return;
    LOG_INFO("received %s; stopping the VM", strsignal(info.ssi_signo));
    exit_->Request(kExitSignalBase + static_cast<int>(info.ssi_signo));
  });
}

bool Vm::CopyBrokenLeases() {
  return CopyLeases([](const FileLease& l) { return l.broken(); });
}

bool Vm::CopyLeasedFile(const std::string& path) {
  return CopyLeases([&](const FileLease& l) { return l.Names(path); });
}

bool Vm::CopyLeases(const std::function<bool(const FileLease&)>& which) {
  if (std::none_of(leases_.begin(), leases_.end(), which)) return true;
  // Nothing may write guest memory while its pages move: the vCPUs park
  // and the devices finish what they have in flight.
  if (!paused_) {
    for (auto& v : vcpus_) v->Pause();
  }
  devices_.Quiesce();
  bool copied = true;
  auto advise = [this](std::span<uint8_t> moved) { memory_.AdviseReplaced(moved); };
  for (FileLease& lease : leases_) {
    if (!which(lease)) continue;
    if (absl::Status st = lease.CopyAndRelease(advise); !st.ok()) {
      LOG_ERROR("%s: stopping the VM before the file changes under it", st.message());
      exit_->Request(kExitGenericError);
      copied = false;
      continue;
    }
    LOG_INFO("a file mapped into guest memory is being written: its %d KiB in guest memory "
             "copied first", lease.covered_bytes() >> 10);
  }
  if (!paused_ && copied) {
    for (auto& v : vcpus_) v->Resume();
  }
  return copied;
}

absl::Status Vm::CopyOnLeaseBreaks() {
  if (leases_.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(lease_signal_fd_, LeaseSignalFd());
  return loop_.Add(lease_signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    DrainSignalFd(lease_signal_fd_.get());
    CopyBrokenLeases();
  });
}

bool Vm::StartVcpus() {
  if (vcpus_started_) return false;
  vcpus_started_ = true;
  LOG_INFO("ready to boot: %d vCPUs, %d MiB; %.3f ms process CPU", vcpus_.size(),
           memory_.total_size() >> 20, ProcessCpuMs());
  if (BootTimer* timer = devices_.boot_timer()) timer->Start(MonotonicMs());
  for (auto& v : vcpus_) v->Start();
  return true;
}

int Vm::Run() {
  StartVcpus();
  if (absl::Status st = StopOnSignals(); !st.ok()) {
    LOG_ERROR("cannot handle SIGINT and SIGTERM: %s", st.message());
    exit_->Request(kExitGenericError);
  }
  if (absl::Status st = CopyOnLeaseBreaks(); !st.ok()) {
    LOG_ERROR("cannot watch the leases on files mapped into guest memory: %s", st.message());
    exit_->Request(kExitGenericError);
  }
  // A break signalled before the signalfd existed and read elsewhere.
  CopyBrokenLeases();
  // The guest can reach the VMM thread's code from the loop on.
  if (absl::Status st = seccomp::InstallThreadFilter("vmm"); !st.ok()) {
    LOG_ERROR("%s", st.message());
    exit_->Request(kExitGenericError);
  }
  // Start-up is over a little after this: its code and the pages mapped
  // around it then leave the RSS (program_pages.h). Not at once: this
  // thread's start-up and the API thread's next requests run beside the
  // vCPUs' first exits; pages they touch after the release would stay.
  constexpr double kStartupEndMs = 20;
  double release_at = MonotonicMs() + kStartupEndMs;
  bool released = false;
  while (!exit_->requested()) {
    int timeout = released ? -1 : std::max(0, static_cast<int>(release_at - MonotonicMs()) + 1);
    absl::Status st = loop_.RunOnce(timeout);
    if (!st.ok()) {
      LOG_ERROR("event loop: %s", st.message());
      exit_->Request(kExitGenericError);
    }
    if (!released && MonotonicMs() >= release_at) {
      ReleaseStartupPages();
      released = true;
    }
  }
  for (auto& v : vcpus_) v->Stop();
  for (auto& v : vcpus_) v->Join();
  devices_.FlushConsole();
  LOG_INFO("VM stopped, all vCPU threads joined; exit code %d", exit_->code());
  return exit_->code();
}

}  // namespace ember
