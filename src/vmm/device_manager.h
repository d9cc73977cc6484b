// The VM's devices, owned in attach order: the serial console and the i8042
// on the port bus, the boot timer and the virtio-mmio devices on the MMIO
// bus, each virtio device on its own window and IOAPIC pin, its queue
// kicks arriving as ioeventfds on the VMM loop and its interrupt leaving
// through an irqfd. The manager finds a device by kind and id, collects
// every device's metrics, and saves and restores them all for snapshots.
#pragma once

#include <unistd.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "src/common/unique_fd.h"
#include "src/config/vm_config.h"
#include "src/devices/legacy/boot_timer.h"
#include "src/devices/legacy/i8042.h"
#include "src/devices/legacy/serial.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/vmm/event_loop.h"
#include "src/vmm/kvm.h"
#include "src/vmm/metrics.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/vm_exit.h"
#include "src/vstate/bus.h"
#include "src/vstate/guest_memory.h"

namespace ember {

// Where the serial console reads and writes; -1 for none. A configured
// serial_out_path replaces out_fd.
struct ConsoleIo {
  int in_fd = STDIN_FILENO;
  int out_fd = STDOUT_FILENO;
};

class DeviceManager {
 public:
  // Everything passed must outlive the manager (the Vm owns them all).
  DeviceManager(const VmFd& vm, const GuestMemory& memory, EventLoop& loop, VmExit& exit)
      : vm_(vm), memory_(memory), loop_(loop), exit_(exit) {}

  // The serial console (COM1, IRQ 4) and the i8042 (IRQ 1), whose reset
  // command stops the VM. Opens serial_out_path, creating it.
  absl::Status AttachLegacy(ConsoleIo io, const SerialConfig& serial);
  // Firecracker's boot timer at 0xd0000000 (--boot-timer).
  absl::Status AttachBootTimer();
  // Puts `device` on the next MMIO window and IRQ and appends the
  // virtio_mmio.device= argument the guest finds it by to `cmdline`.
  absl::Status AttachVirtio(std::unique_ptr<virtio::VirtioDevice> device, std::string* cmdline);
  // Maps `pmem`'s file into guest physical memory past RAM (past 4 GiB,
  // each device after the last, on 2 MiB) as a KVM memory slot of its
  // own, and attaches its virtio-pmem device. The guest's address of a
  // file depends only on the RAM and the pmem devices before it, so a
  // snapshot's restore maps it where it was.
  absl::Status AttachPmem(const PmemConfig& pmem, std::string* cmdline);
  // The virtio-mem device on guest memory's hotplug region (reserved by
  // Vm::ReserveHotplugMemory), its KVM slots numbered after RAM's.
  absl::Status AttachMemoryHotplug(const MemoryHotplugConfig& config, std::string* cmdline);
  // While set (a restore from a memory file, before Restore), a hotplug
  // slot the device opens is first filled from `fd`, where the region
  // follows RAM; -1 stops it.
  void FillHotplugSlotsFrom(int fd) { hotplug_fill_fd_ = fd; }

  // Runs `f(T&)` on the virtio device of kind T (T::kType) with `id`
  // ("" for a device there is one of) under its transport's lock, and
  // returns what `f` returns (a Status or StatusOr): InvalidArgument when
  // there is no such device.
  template <typename T, typename F>
  auto WithDevice(std::string_view id, F f) -> decltype(f(std::declval<T&>())) {
    virtio::MmioTransport* t = Find(T::kType, id);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("there is no ", T::kKind, id.empty() ? "" : absl::StrCat(" '", std::string(id), "'")));
    }
    return t->WithDevice([&](virtio::VirtioDevice& d) { return f(static_cast<T&>(d)); });
  }

  // Presses Ctrl-Alt-Del on the guest's keyboard.
  absl::Status SendCtrlAltDel();
  // Every device's counters, and the console's (VMM thread).
  void CollectMetrics(Metrics* metrics);
  // Lets every device finish the guest-memory writes it has in flight.
  void Quiesce();
  // The devices' part of a snapshot (the VM is paused) and back, onto a
  // manager that attached the same devices in the same order.
  void Save(snapshot::SnapshotState* state);
  absl::Status Restore(const snapshot::SnapshotState& state);

  const Bus& pio() const { return pio_; }
  const Bus& mmio() const { return mmio_; }
  BootTimer* boot_timer() { return boot_timer_.get(); }
  // Writes what the serial port holds to its output (at exit).
  void FlushConsole() { serial_->Flush(); }

 private:
  virtio::MmioTransport* Find(uint32_t type, std::string_view id);
  void OnConsoleInput();

  const VmFd& vm_;
  const GuestMemory& memory_;
  EventLoop& loop_;
  VmExit& exit_;
  Bus pio_;
  Bus mmio_;
  std::shared_ptr<Serial> serial_;
  std::shared_ptr<I8042> i8042_;
  std::shared_ptr<BootTimer> boot_timer_;  // with --boot-timer
  UniqueFd serial_out_;  // serial_out_path, when configured
  UniqueFd serial_irq_;
  UniqueFd keyboard_irq_;
  int console_in_ = -1;
  std::vector<UniqueFd> queue_events_;
  std::vector<std::shared_ptr<virtio::MmioTransport>> virtio_;
  uint32_t pmem_slots_ = 0;   // KVM slots after guest memory's
  uint64_t pmem_next_ = 0;    // where the next pmem region goes, once there is one
  int hotplug_fill_fd_ = -1;
};

}  // namespace ember
