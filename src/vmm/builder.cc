#include "src/vmm/builder.h"

#include <algorithm>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/common/thread_stack.h"
#include "src/devices/virtio/balloon/balloon_device.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/net/net_device.h"
#include "src/devices/virtio/rng/entropy_device.h"
#include "src/devices/virtio/vsock/vsock_device.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/arch/x86_64/mptable.h"
#include "src/vmm/arch/x86_64/static_cpu_templates.h"
#include "src/vmm/host.h"

namespace ember {
namespace {

// The configuration's limit must fit the MP table.
static_assert(kMaxVcpus <= x86_64::kMaxVcpus);

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
  std::string with_host = AddHostBootArgs(args, IsPvmHost());
  if (with_host != args) {
    LOG_INFO("PVM host (KVM in software): added guest boot args \"%s\"", kPvmGuestArgs);
  }
  return with_host;
}

// Memory hotplug's device, drives (root first, so it is /dev/vda), pmem,
// network interfaces, the balloon, vsock and the entropy device; appends
// their virtio_mmio.device= and root= arguments.
absl::Status AttachVirtioDevices(const VmConfig& config, DeviceManager& devices,
                                 std::string* cmdline, MmdsRefs mmds,
                                 const OpenTaps* taps = nullptr) {
  if (config.mmds) RETURN_IF_ERROR(ValidateMmds(*config.mmds, config.net));
  RETURN_IF_ERROR(ValidateDrives(config.drives));
  RETURN_IF_ERROR(ValidateNet(config.net));
  // First: a restore opens its plugged slots before any other device
  // looks into guest memory (the rings, requests in flight).
  if (config.memory_hotplug) {
    RETURN_IF_ERROR(devices.AttachMemoryHotplug(*config.memory_hotplug, cmdline));
    // Plugged memory comes online by itself, and movable, so that the
    // guest can unplug it again; a boot_args value wins.
    if (cmdline->find("memhp_default_state=") == std::string::npos) {
      absl::StrAppend(cmdline, " memhp_default_state=online_movable");
    }
  }
  std::vector<const DriveConfig*> drives;
  for (const DriveConfig& d : config.drives) {
    if (d.is_root_device) drives.insert(drives.begin(), &d);
    else drives.push_back(&d);
  }
  for (const DriveConfig* d : drives) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::block::BlockDevice> dev,
                     virtio::block::BlockDevice::Create(*d));
    RETURN_IF_ERROR(devices.AttachVirtio(std::move(dev), cmdline));
  }
  if (!drives.empty() && drives.front()->is_root_device) {
    const DriveConfig& root = *drives.front();
    absl::StrAppend(cmdline, root.partuuid.empty() ? " root=/dev/vda"
                                                   : absl::StrCat(" root=PARTUUID=", root.partuuid),
                    root.is_read_only ? " ro" : " rw");
  }
  // The guest names them /dev/pmem0, 1, ... in this order.
  RETURN_IF_ERROR(ValidatePmem(config.pmem, config.drives));
  for (size_t i = 0; i < config.pmem.size(); i++) {
    const PmemConfig& p = config.pmem[i];
    RETURN_IF_ERROR(devices.AttachPmem(p, cmdline));
    // libnvdimm registers its disks asynchronously, after the kernel
    // would first look for its root.
    if (p.root_device) {
      absl::StrAppend(cmdline, " root=/dev/pmem", i, p.read_only ? " ro" : " rw", " rootwait");
    }
  }
  for (const NetConfig& n : config.net) {
    std::optional<virtio::net::Tap> tap;
    auto held = taps ? taps->find(n.iface_id) : OpenTaps::const_iterator();
    if (taps && held != taps->end() && held->second.name() == n.host_dev_name) {
      ASSIGN_OR_RETURN(tap, held->second.Duplicate());
    }
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::net::NetDevice> dev,
                     virtio::net::NetDevice::Create(n, std::move(tap)));
    if (config.mmds && mmds.store != nullptr &&
        std::find(config.mmds->network_interfaces.begin(), config.mmds->network_interfaces.end(),
                  n.iface_id) != config.mmds->network_interfaces.end()) {
      mmds::NetworkStackConfig stack;
      stack.ipv4 = config.mmds->ipv4_address;
      dev->SetMmds(std::make_unique<mmds::NetworkStack>(stack, mmds.store, mmds.metrics));
    }
    RETURN_IF_ERROR(devices.AttachVirtio(std::move(dev), cmdline));
  }
  if (config.balloon) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::balloon::BalloonDevice> balloon,
                     virtio::balloon::BalloonDevice::Create(*config.balloon));
    RETURN_IF_ERROR(devices.AttachVirtio(std::move(balloon), cmdline));
  }
  if (config.vsock) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::vsock::VsockDevice> vsock,
                     virtio::vsock::VsockDevice::Create(*config.vsock));
    RETURN_IF_ERROR(devices.AttachVirtio(std::move(vsock), cmdline));
  }
  if (config.entropy) {
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::rng::EntropyDevice> rng,
                     virtio::rng::EntropyDevice::Create(*config.entropy));
    RETURN_IF_ERROR(devices.AttachVirtio(std::move(rng), cmdline));
  }
  return absl::OkStatus();
}

// The snapshot's memory layout must be the one its configuration gives.
absl::Status CheckLayout(const VmConfig& config, const snapshot::SnapshotState& state) {
  ASSIGN_OR_RETURN(std::vector<MemoryRange> expected,
                   x86_64::RamRanges(config.machine.mem_size_mib << 20));
  bool same = expected.size() == state.memory.size();
  for (size_t i = 0; same && i < expected.size(); i++) {
    same = expected[i].guest_addr == state.memory[i].guest_addr &&
           expected[i].size == state.memory[i].size;
  }
  if (!same) {
    return absl::InvalidArgumentError(
        "the snapshot's memory layout does not match its mem_size_mib");
  }
  return absl::OkStatus();
}

// A lease (file_lease.h) on the snapshot's memory file, which guest
// memory maps private: a program that rewrites it (a rebase onto it, a new
// snapshot over it) waits until the guest has its own copy. Where the
// lease cannot be taken, the file must stay as it is; this VMM's own
// writes to it still copy first.
std::vector<FileLease> LeaseMemoryFile(const GuestMemory& memory, int fd) {
  absl::StatusOr<FileLease> lease = FileLease::Take(fd);
  if (!lease.ok()) {
    LOG_DEBUG("the memory file is not leased: %s", lease.status().message());
    lease = FileLease::Unleased(fd);
    if (!lease.ok()) return {};
  }
  for (const GuestRegion& r : memory.regions()) lease->Cover({r.host, r.size});
  std::vector<FileLease> leases;
  leases.push_back(std::move(*lease));
  return leases;
}

// A writable drive on a file the VM maps (its kernel or memory file, an
// odd configuration) is copied out of guest memory first: the drive's
// open would wait out the VMM's own lease.
absl::Status CopyLeasedDrives(const VmConfig& config, Vm& vm) {
  for (const DriveConfig& d : config.drives) {
    if (!d.is_read_only && !vm.CopyLeasedFile(d.path_on_host)) {
      return absl::InternalError(absl::StrCat("drive ", d.drive_id, ": guest memory mapped from ",
                                              d.path_on_host, " could not be copied"));
    }
  }
  return absl::OkStatus();
}

// The template the vCPUs get: machine-config's static one, if this host
// is one it was made for, or the custom one.
absl::StatusOr<std::optional<CpuTemplate>> CpuTemplateOf(const VmConfig& config) {
  StaticCpuTemplate t = config.machine.cpu_template;
  if (t == StaticCpuTemplate::kNone) return config.cpu_config;
  return x86_64::StaticTemplateFor(t, x86_64::HostCpuModel());
}

// What Vm::Create is to build in: the caller's spare, taken.
std::optional<VmShell> Take(std::optional<VmShell>* shell) {
  return shell ? std::exchange(*shell, std::nullopt) : std::nullopt;
}

}  // namespace

absl::StatusOr<PreparedVm> PreparedVm::Prepare(const VmConfig& config,
                                               std::optional<VmShell>* shell) {
  if (!config.boot_source) {
    return absl::InvalidArgumentError("boot-source is missing: a kernel_image_path is required");
  }
  RETURN_IF_ERROR(ValidateMachineConfig(config.machine));
  ASSIGN_OR_RETURN(std::optional<CpuTemplate> cpu_template, CpuTemplateOf(config));
  ASSIGN_OR_RETURN(std::vector<MemoryRange> ranges, GuestRanges(config.machine.mem_size_mib));
  ASSIGN_OR_RETURN(GuestMemory memory, GuestMemory::Create(ranges,
                                                           GuestMemory::mergeable_by_default(),
                                                           config.machine.huge_pages));
  // Before the plan: the ranges it hands out are the VMM's writes.
  if (config.machine.track_dirty_pages) memory.EnableDirtyTracking();
  ASSIGN_OR_RETURN(ImageLoad load, ImageLoad::Plan(memory, *config.boot_source));
  // THP for the kernel's range: with Transparent all of memory has it, and
  // on hugetlbfs the advice would only split the mapping.
  if (config.machine.huge_pages == HugePages::kNone) load.Advise(memory);
  // The copier first fetches KVM's CPUID list (on a virtualised host, half
  // a millisecond of trapped CPUID instructions), then copies beside KVM's
  // set-up; this thread takes its share of what is left once that is done.
  // `memory` (or the Vm it moves into) outlives the copier on every path.
  std::promise<absl::StatusOr<CpuidEntries>> cpuid;
  absl::Status copied;
  std::thread copier([&load, &cpuid, &copied] {
    KeepStackInSmallPages();  // glibc keeps the stack for later threads
    absl::StatusOr<Kvm> kvm = Kvm::Open();
    cpuid.set_value(kvm.ok() ? kvm->SupportedCpuid() : kvm.status());
    copied = load.CopyShare();
  });
  absl::StatusOr<std::unique_ptr<Vm>> made =
      Vm::Create(memory, config.machine.track_dirty_pages, Take(shell));
  absl::StatusOr<CpuidEntries> supported = cpuid.get_future().get();
  absl::Status vcpus = made.ok() ? supported.status() : made.status();
  const LoadedImages& images = load.images();
  if (vcpus.ok()) {
    vcpus = (*made)->CreateVcpus(config.machine.vcpu_count,
                                 BootEntry{images.kernel.entry, images.kernel.protocol},
                                 &*supported,
                                 cpu_template ? &*cpu_template : nullptr,
                                 config.machine.smt);
  }
  absl::Status shared = load.CopyShare();
  copier.join();
  RETURN_IF_ERROR(vcpus);
  RETURN_IF_ERROR(copied);
  RETURN_IF_ERROR(shared);
  RETURN_IF_ERROR(load.Finish());
  std::unique_ptr<Vm> vm = std::move(*made);
  std::vector<FileLease> leases = load.TakeLeases();
  if (load.mapped_bytes() > 0) {
    LOG_INFO("%d KiB of the kernel and initrd mapped from their files, not copied (%s)",
             load.mapped_bytes() >> 10,
             leases.empty() ? "read-only file system" : "under a lease");
  }
  vm->HoldLeases(std::move(leases));
  return PreparedVm(std::move(vm), std::move(images), config.machine, config.cpu_config,
                    *config.boot_source);
}

bool PreparedVm::Matches(const VmConfig& config) const {
  if (!config.boot_source || !images_.stable) return false;
  const BootSourceConfig& boot = *config.boot_source;
  if (config.machine != machine_ || config.cpu_config != cpu_config_ ||
      boot.kernel_image_path != boot_.kernel_image_path ||
      boot.initrd_path != boot_.initrd_path) {
    return false;
  }
  absl::StatusOr<FileStamp> kernel = StampOf(boot.kernel_image_path);
  if (!kernel.ok() || *kernel != images_.kernel_stamp) return false;
  if (boot.initrd_path.empty()) return true;
  absl::StatusOr<FileStamp> initrd = StampOf(boot.initrd_path);
  return initrd.ok() && *initrd == images_.initrd_stamp;
}

absl::StatusOr<std::unique_ptr<Vm>> BuildForBoot(const VmConfig& config, ConsoleIo io,
                                                  MmdsRefs mmds,
                                                  std::optional<PreparedVm> prepared,
                                                  const OpenTaps* taps) {
  if (!prepared || !prepared->Matches(config)) {
    if (prepared) LOG_INFO("the machine, kernel or initrd changed since it was prepared: again");
    prepared.reset();  // its memory and files go before new ones come
    ASSIGN_OR_RETURN(prepared, PreparedVm::Prepare(config));
  }
  std::unique_ptr<Vm> vm = std::move(prepared->vm_);
  std::string cmdline = GuestCmdline(*config.boot_source);
  RETURN_IF_ERROR(CopyLeasedDrives(config, *vm));
  if (config.memory_hotplug) {
    RETURN_IF_ERROR(vm->ReserveHotplugMemory(*config.memory_hotplug, config.pmem.size()));
  }
  RETURN_IF_ERROR(AttachVirtioDevices(config, vm->devices(), &cmdline, mmds, taps));
  RETURN_IF_ERROR(
      WriteBootInfo(vm->memory(), prepared->images_, cmdline, config.machine.vcpu_count)
          .status());
  // Last of the configuration checks: it may create serial_out_path.
  RETURN_IF_ERROR(vm->devices().AttachLegacy(io, config.serial));
  if (config.boot_timer) RETURN_IF_ERROR(vm->devices().AttachBootTimer());
  return vm;
}

absl::StatusOr<std::unique_ptr<Vm>> BuildFromSnapshot(const VmConfig& config, ConsoleIo io,
                                                      const snapshot::SnapshotState& state,
                                                      int mem_fd,
                                                      const std::string& uffd_socket,
                                                      MmdsRefs mmds,
                                                      std::optional<VmShell>* shell) {
  RETURN_IF_ERROR(ValidateMachineConfig(config.machine));
  if (state.machine.vcpus.size() != config.machine.vcpu_count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the snapshot has %d vCPU states for vcpu_count %d",
                        state.machine.vcpus.size(), config.machine.vcpu_count));
  }
  RETURN_IF_ERROR(CheckLayout(config, state));
  snapshot::UffdHandover uffd;
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
                   Vm::Create(
                       [&]() -> absl::StatusOr<GuestMemory> {
                         bool merge = GuestMemory::mergeable_by_default();
                         HugePages huge = config.machine.huge_pages;
                         const std::optional<MemoryHotplugConfig>& hp = config.memory_hotplug;
                         uint64_t hotplug_bytes = hp ? uint64_t{hp->total_size_mib} << 20 : 0;
                         ASSIGN_OR_RETURN(
                             GuestMemory mem,
                             uffd_socket.empty()
                                 ? GuestMemory::MapFile(state.memory, mem_fd, merge, huge,
                                                        hotplug_bytes)
                                 : GuestMemory::Create(state.memory, merge, huge));
                         if (hp) {
                           ASSIGN_OR_RETURN(uint64_t start, HotplugRegionStart(mem, *hp));
                           RETURN_IF_ERROR(mem.AddHotplugRegion(
                               start, hotplug_bytes, uint64_t{hp->slot_size_mib} << 20));
                         }
                         // Handed over before anything reads guest memory.
                         if (!uffd_socket.empty()) {
                           ASSIGN_OR_RETURN(uffd,
                                            snapshot::HandOverToUffdHandler(mem, uffd_socket));
                         }
                         return mem;
                       },
                       config.machine.track_dirty_pages, Take(shell)));
  vm->set_uffd(std::move(uffd));
  // Another host's KVM may have fewer slots than the one that took it.
  if (config.memory_hotplug) {
    RETURN_IF_ERROR(vm->CheckMemorySlots(*config.memory_hotplug, config.pmem.size()));
  }
  if (uffd_socket.empty()) vm->HoldLeases(LeaseMemoryFile(vm->memory(), mem_fd));
  // The command line the devices would add is the guest's business now.
  std::string unused_cmdline;
  RETURN_IF_ERROR(CopyLeasedDrives(config, *vm));
  RETURN_IF_ERROR(AttachVirtioDevices(config, vm->devices(), &unused_cmdline, mmds));
  RETURN_IF_ERROR(vm->devices().AttachLegacy(io, config.serial));
  // CPUID and registers come from the snapshot.
  RETURN_IF_ERROR(vm->CreateVcpus(config.machine.vcpu_count, std::nullopt));
  RETURN_IF_ERROR(vm->RestoreMachineState(state.machine));
  // Plugged hotplug memory is read as its slots open, before the other
  // devices look into it; with Uffd the handler fills it.
  if (uffd_socket.empty()) vm->devices().FillHotplugSlotsFrom(mem_fd);
  absl::Status restored = vm->devices().Restore(state);
  vm->devices().FillHotplugSlotsFrom(-1);
  RETURN_IF_ERROR(restored);
  return vm;
}

}  // namespace ember
