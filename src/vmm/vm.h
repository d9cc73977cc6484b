// A microVM at run time: the KVM VM with its guest memory, in-kernel
// irqchip and PIT, its devices (device_manager.h), its vCPU threads and the
// VMM thread's event loop. builder.h makes one, for boot or from a
// snapshot; Run serves it until the guest resets or an error stops it.
//
// src/vmm owns KVM, the vCPUs, the boot layout (arch/, loader/), snapshots
// (snapshot/), the builder, the device manager and the controllers that run
// the API's actions; it may use src/devices, src/seccomp, src/vstate,
// src/config and src/common, and nothing of api/.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/file_lease.h"
#include "src/common/unique_fd.h"
#include "src/config/cpu_template.h"
#include "src/vmm/boot.h"
#include "src/vmm/device_manager.h"
#include "src/vmm/event_loop.h"
#include "src/vmm/kvm.h"
#include "src/vmm/metrics.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/snapshot/uffd.h"
#include "src/vmm/vcpu.h"
#include "src/vmm/vm_exit.h"
#include "src/vstate/guest_memory.h"

namespace ember {

// Where memory hotplug's region starts: past RAM and 4 GiB, on 2 GiB
// (Linux's largest memory block on x86_64) or the block size if larger. Refused if the region would
// end past the host CPUs' physical addresses, which the guest has too.
absl::StatusOr<uint64_t> HotplugRegionStart(const GuestMemory& memory,
                                            const MemoryHotplugConfig& config);

// The part of a Vm that needs no configuration: /dev/kvm opened and
// checked, a KVM VM with its TSS and identity map. A VMM that waits for its
// configuration makes one ahead, so that a start or a snapshot load does
// not wait for KVM_CREATE_VM (0.2 ms here). An Ember that is never started
// holds it anyway: two fds, KVM's memory for a VM and its kvm-nx-lpage
// task. The irqchip cannot come ahead: guest memory registered after it
// costs milliseconds on PVM hosts.
class VmShell {
 public:
  static absl::StatusOr<VmShell> Create();

 private:
  friend class Vm;
  VmShell(Kvm kvm, VmFd vm) : kvm_(std::move(kvm)), vm_(std::move(vm)) {}
  Kvm kvm_;
  VmFd vm_;
};

class Vm {
 public:
  using MemoryMaker = std::function<absl::StatusOr<GuestMemory>()>;
  // A KVM VM with the memory `make_memory` returns registered, the
  // irqchip, the PIT, an event loop and no devices or vCPUs yet. Built in
  // `shell` if given, else in a new one.
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const MemoryMaker& make_memory,
                                                    bool track_dirty_pages,
                                                    std::optional<VmShell> shell = {});
  // The same with `memory`, which moves into the Vm only if it is made:
  // after a failure the caller still owns it (a thread may be copying in).
  static absl::StatusOr<std::unique_ptr<Vm>> Create(GuestMemory& memory, bool track_dirty_pages,
                                                    std::optional<VmShell> shell = {});

  // `count` vCPUs with CPUID and registers for `entry` (the builder), the
  // CPUID filtered from `supported` (KVM_GET_SUPPORTED_CPUID's list, which
  // the builder fetches beside its copy). Without an entry (a snapshot's VM)
  // they get neither, and `supported` may be null: the saved state sets both.
  // A booting VM's `cpu_template` (PUT /cpu-config), if any, changes CPUID
  // and MSRs first (arch/x86_64/cpu_template.h).
  // With `smt`, pairs of vCPUs are the two threads of a core in CPUID.
  absl::Status CreateVcpus(uint32_t count, std::optional<BootEntry> entry,
                           const CpuidEntries* supported = nullptr,
                           const CpuTemplate* cpu_template = nullptr, bool smt = false);

  // Lets the vCPUs run (once; Run does it if nobody did): as soon as the
  // start is answered, so that their threads wake while the VMM thread
  // finishes its own start-up. Nothing reaches the VMM thread's handlers
  // before Run. True if this call started them.
  bool StartVcpus();
  // Starts the vCPUs and serves devices until the VM stops; every thread is
  // joined before it returns the process exit code (exit_code.h).
  int Run();

  // Parks every vCPU out of KVM_RUN (returns once they all are) / lets
  // them run again. VMM thread.
  void Pause();
  void Resume();
  bool paused() const { return paused_; }

  // Snapshots of a paused VM: KVM's state of the VM and its vCPUs, the
  // devices' state and the memory layout. The caller fills in config_json.
  absl::StatusOr<snapshot::SnapshotState> CaptureSnapshot();
  // Writes guest memory, region after region, to a new file at `path`.
  // With `diff` (needs track_dirty_pages), only the pages written since
  // the last snapshot, at their offsets in a sparse file of full size: lay
  // it over the previous layers' memory file (ember-snapshot-rebase).
  // A file at `path` this VM's memory maps from (it was loaded from it) is
  // copied into guest memory first: the VMM's own write would otherwise
  // wait out its lease, then pull the pages from under the guest.
  absl::Status WriteMemoryFile(const std::string& path, bool diff);
  // What KVM holds of a paused VM: its irqchip, PIT and clock, and every
  // vCPU's state. Restore puts it into a VM built from the same
  // configuration, before Run.
  absl::StatusOr<snapshot::MachineState> SaveMachineState() const;
  absl::Status RestoreMachineState(const snapshot::MachineState& state);

  // Serves `fd` on the VMM loop (the API's requests), from before Run.
  absl::Status AddLoopHandler(int fd, EventLoop::Handler handler);
  EventLoop& loop() { return loop_; }

  DeviceManager& devices() { return devices_; }
  // Memory hotplug's region (HotplugRegionStart), all unplugged, before
  // any pmem device is attached (they go past it). Refused where KVM lacks
  // the slots, counting `other_slots` more to come.
  absl::Status ReserveHotplugMemory(const MemoryHotplugConfig& config, size_t other_slots);
  // Whether KVM has a memory slot for each of RAM's regions, each hotplug
  // slot and `other_slots` more (a restore, whose region is already there).
  absl::Status CheckMemorySlots(const MemoryHotplugConfig& config, size_t other_slots) const;
  // Adds the vCPUs', the devices' and the VMM's latencies to `m` (VMM thread).
  void CollectMetrics(Metrics* m);
  // How long the VMM took to pause, resume, snapshot or load this VM.
  VmmLatencies& latencies() { return latencies_; }
  const GuestMemory& memory() const { return memory_; }
  // Holds the leases on the files mapped into guest memory (the kernel and
  // initrd, boot.h; a snapshot's memory file, builder.h, which may also
  // be unleased) while the VM lives.
  void HoldLeases(std::vector<FileLease> leases) { leases_ = std::move(leases); }
  // Copies the pages of every file someone waits to write, then lets the
  // writer go: on SIGIO, which Run watches (before it, the controller).
  // A copy that fails stops the VM rather than let the file change under
  // it, and returns false.
  bool CopyBrokenLeases();
  // The same for the file at `path`, if guest memory maps it (leased or
  // not), before this process writes it: its own open would wait out its
  // own lease, or, with none, its writes would reach the guest.
  bool CopyLeasedFile(const std::string& path);
  // Keeps the Uffd page-fault handler's connection open while the VM lives.
  void set_uffd(snapshot::UffdHandover uffd) { uffd_ = std::move(uffd); }

  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;
  ~Vm();

 private:
  Vm(Kvm kvm, VmFd vm, GuestMemory memory, EventLoop loop, std::unique_ptr<VmExit> exit)
      : kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)),
        loop_(std::move(loop)), exit_(std::move(exit)), devices_(vm_, memory_, loop_, *exit_) {}

  // SIGINT and SIGTERM stop the VM in order instead of killing the process.
  absl::Status StopOnSignals();
  // CopyAndRelease on the leases `which` picks.
  bool CopyLeases(const std::function<bool(const FileLease&)>& which);
  // SIGIO runs CopyBrokenLeases.
  absl::Status CopyOnLeaseBreaks();

  // Declared in build order; vCPUs last, so they are joined first.
  Kvm kvm_;
  VmFd vm_;
  GuestMemory memory_;
  EventLoop loop_;
  std::unique_ptr<VmExit> exit_;
  DeviceManager devices_;
  snapshot::UffdHandover uffd_;  // snapshot loaded with mem_backend Uffd
  bool paused_ = false;
  bool vcpus_started_ = false;
  VmmLatencies latencies_;
  UniqueFd signal_fd_;
  std::vector<FileLease> leases_;
  UniqueFd lease_signal_fd_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  void AddExtraMsr(uint32_t index);
  // MSRs a CPU template set, or a restored snapshot had, that KVM's save
  // list may lack; saved besides it. Each once.
  std::vector<uint32_t> extra_msrs_;
};

}  // namespace ember
