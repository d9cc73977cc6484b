// A microVM: KVM VM, guest memory, devices and vCPUs, built from a VmConfig
// and run until the guest resets or an error stops it.
#pragma once

#include <unistd.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/devices/legacy/boot_timer.h"
#include "src/devices/legacy/i8042.h"
#include "src/devices/legacy/serial.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/vmm/boot.h"
#include "src/vstate/bus.h"
#include "src/vmm/event_loop.h"
#include "src/vstate/guest_memory.h"
#include "src/vmm/kvm.h"
#include "src/vmm/metrics.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/snapshot/uffd.h"
#include "src/vmm/vcpu.h"
#include "src/config/vm_config.h"
#include "src/vmm/vm_exit.h"
#include "src/vmm/vmm_action.h"

namespace ember {

using snapshot::MachineState;
using snapshot::SnapshotState;

// Where the serial console reads and writes; -1 for none. A configured
// serial_out_path replaces out_fd.
struct ConsoleIo {
  int in_fd = STDIN_FILENO;
  int out_fd = STDOUT_FILENO;
};

class Vm {
 public:
  // Builds the whole VM; nothing runs yet. Errors caused by the
  // configuration are InvalidArgument or NotFound and name the field or file.
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const VmConfig& config, ConsoleIo io);

  // Snapshots. The VM must be paused, and have no virtio device (their
  // state is not saved yet). The caller fills in config_json.
  absl::StatusOr<SnapshotState> CaptureSnapshot() const;
  // Writes guest memory, region after region, to a new file at `path`.
  // With `diff` (needs track_dirty_pages), only the pages written since
  // the last snapshot, at their offsets in a sparse file of full size: lay
  // it over the previous layers' memory file (ember-snapshot-rebase).
  absl::Status WriteMemoryFile(const std::string& path, bool diff) const;
  // The VM a snapshot describes, `config` being the one it carries; guest
  // memory is `mem_fd` mapped private (pages load on first touch). Run it
  // as a created VM; Pause first to start it paused.
  // With `uffd_socket` (mem_backend Uffd), guest memory is anonymous and a
  // page-fault handler listening there fills it (snapshot/uffd.h).
  static absl::StatusOr<std::unique_ptr<Vm>> Restore(const VmConfig& config, ConsoleIo io,
                                                     const SnapshotState& state, int mem_fd,
                                                     const std::string& uffd_socket = "");

  // Starts the vCPUs and serves devices until the VM stops; every thread is
  // joined before it returns the process exit code (exit_code.h).
  int Run();

  const GuestMemory& memory() const { return memory_; }
  // With --boot-timer; else nullptr.
  const BootTimer* boot_timer() const { return boot_timer_.get(); }

  // Serves `fd` on the VMM loop (the API's requests), from before Run.
  absl::Status AddLoopHandler(int fd, EventLoop::Handler handler);
  // Lets `f` register what it needs on the VMM loop, from before Run.
  absl::Status WatchOnLoop(const std::function<absl::Status(EventLoop&)>& f) { return f(loop_); }
  // Parks every vCPU out of KVM_RUN (returns once they all are) / lets
  // them run again. VMM thread.
  void Pause();
  void Resume();
  bool paused() const { return paused_; }

  // What KVM holds of a paused VM: its irqchip, PIT and clock, and every
  // vCPU's state (snapshots). Restore puts it into a VM built by Create
  // from the same configuration, before Run.
  absl::StatusOr<MachineState> SaveMachineState() const;
  absl::Status RestoreMachineState(const MachineState& state);

  // Presses Ctrl-Alt-Del on the guest's keyboard.
  absl::Status SendCtrlAltDel();

  // Serves drive `drive_id` from `path` from now on (VMM thread).
  absl::Status SwapDrive(const std::string& drive_id, const std::string& path);

  // Every device's counters, and the console's (VMM thread).
  void CollectMetrics(Metrics* metrics);

  // The balloon, while the guest runs (VMM thread).
  absl::Status SetBalloonTarget(uint64_t amount_mib);
  absl::Status SetBalloonStatsInterval(uint32_t seconds);
  absl::StatusOr<BalloonStats> GetBalloonStats();

  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;
  ~Vm();

 private:
  using MemoryMaker = std::function<absl::StatusOr<GuestMemory>()>;
  // Drives, network interfaces and the balloon, in that order.
  absl::Status AttachDevices(const VmConfig& config, std::string* cmdline);
  // KVM VM with its memory registered, irqchip, PIT, loop and exit.
  static absl::StatusOr<std::unique_ptr<Vm>> CreateBare(const MemoryMaker& make_memory,
                                                        bool track_dirty_pages);
  Vm(Kvm kvm, VmFd vm, GuestMemory memory, EventLoop loop, std::unique_ptr<VmExit> exit)
      : kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)),
        loop_(std::move(loop)), exit_(std::move(exit)) {}

  absl::Status AttachLegacyDevices(ConsoleIo io, const SerialConfig& serial);
  // Drives, root first; appends their virtio_mmio.device= and root= args.
  absl::Status AttachDrives(const std::vector<DriveConfig>& drives, std::string* cmdline);
  absl::Status AttachNet(const std::vector<NetConfig>& net, std::string* cmdline);
  // Puts a device on the next MMIO slot and IRQ, with an ioeventfd per
  // queue served by the VMM loop and an irqfd for its interrupt.
  absl::Status AttachVirtio(std::unique_ptr<virtio::VirtioDevice> device, std::string* cmdline);
  absl::Status CreateVcpus(uint32_t count, const BootEntry& entry);
  void OnConsoleInput(uint32_t events);
  // SIGINT and SIGTERM stop the VM in order instead of killing the process.
  absl::Status StopOnSignals();

  // Declared in build order; vCPUs last, so they are joined first.
  Kvm kvm_;
  VmFd vm_;
  GuestMemory memory_;
  EventLoop loop_;
  std::unique_ptr<VmExit> exit_;
  Bus pio_;
  Bus mmio_;
  std::shared_ptr<Serial> serial_;
  std::shared_ptr<I8042> i8042_;
  std::shared_ptr<BootTimer> boot_timer_;  // with --boot-timer
  snapshot::UffdHandover uffd_;  // snapshot loaded with mem_backend Uffd
  UniqueFd keyboard_irq_;
  UniqueFd serial_out_;  // serial_out_path, when configured
  UniqueFd serial_irq_;
  std::vector<UniqueFd> queue_events_;
  std::vector<std::shared_ptr<virtio::MmioTransport>> virtio_;
  virtio::MmioTransport* balloon_ = nullptr;
  bool paused_ = false;
  int console_in_ = -1;
  UniqueFd signal_fd_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
};

}  // namespace ember
