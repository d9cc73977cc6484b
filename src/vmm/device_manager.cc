#include "src/vmm/device_manager.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/exit_code.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/arch/x86_64/mptable.h"
#include "src/vmm/host.h"
#include "src/devices/virtio/mem/mem_device.h"
#include "src/devices/virtio/pmem/pmem_device.h"

namespace ember {
namespace {

// A hotplug slot's bytes from a snapshot's memory file. Read, not mapped:
// a slot the guest unplugs must become memory it can give back, and the
// file's leases cover RAM only.
absl::Status ReadFully(int fd, std::span<uint8_t> to, uint64_t offset) {
  for (uint64_t done = 0; done < to.size();) {
    ssize_t n = pread(fd, to.data() + done, to.size() - done, static_cast<off_t>(offset + done));
    if (n <= 0) return ErrnoStatus("reading hotplug memory from the memory file", n < 0 ? errno : EIO);
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace
namespace {

// Virtio devices take IOAPIC pins from here up; below are the ISA devices
// (PIT 0, keyboard 1, serial 4).
constexpr uint32_t kVirtioFirstIrq = 5;

absl::StatusOr<UniqueFd> IrqEventFd(const VmFd& vm, uint32_t gsi) {
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus("eventfd");
  RETURN_IF_ERROR(vm.RegisterIrqfd(fd.get(), gsi));
  return fd;
}

void Signal(int eventfd) {
  uint64_t one = 1;
  (void)!::write(eventfd, &one, sizeof(one));
}

}  // namespace

absl::Status DeviceManager::AttachLegacy(ConsoleIo io, const SerialConfig& serial) {
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
  ASSIGN_OR_RETURN(serial_irq_, IrqEventFd(vm_, Serial::kCom1Irq));
  serial_ = std::make_shared<Serial>(io.out_fd, [fd = serial_irq_.get()] { Signal(fd); });
  if (serial.rate_limiter) serial_->LimitOutput(*serial.rate_limiter);
  RETURN_IF_ERROR(pio_.Insert(serial_, Serial::kCom1Base, Serial::kRegisterCount));

  ASSIGN_OR_RETURN(keyboard_irq_, IrqEventFd(vm_, I8042::kKeyboardIrq));
  VmExit* exit = &exit_;
  i8042_ = std::make_shared<I8042>(
      [exit] {
        // Linux writes the reset command more than once; say it once.
        if (exit->Request(kExitOk)) LOG_INFO("guest reset through the i8042; stopping the VM");
      },
      [fd = keyboard_irq_.get()] { Signal(fd); });
  RETURN_IF_ERROR(pio_.Insert(i8042_, I8042::kBase, I8042::kSize));

  if (io.in_fd >= 0) {
    // epoll refuses regular files such as /dev/null: then there is no input.
    absl::Status st = loop_.Add(io.in_fd, EPOLLIN, [this](uint32_t) { OnConsoleInput(); });
    if (st.ok()) console_in_ = io.in_fd;
  }
  return absl::OkStatus();
}

absl::Status DeviceManager::AttachBootTimer() {
  boot_timer_ = std::make_shared<BootTimer>();
  return mmio_.Insert(boot_timer_, BootTimer::kBase, BootTimer::kSize);
}

absl::Status DeviceManager::AttachPmem(const PmemConfig& pmem, std::string* cmdline) {
  using virtio::pmem::kAlignment;
  ASSIGN_OR_RETURN(virtio::pmem::PmemBacking backing,
                   virtio::pmem::PmemBacking::Map(pmem.path_on_host, pmem.read_only));
  if (pmem_slots_ == 0) {
    uint64_t end = std::max(x86_64::kMmioHoleEnd, memory_.end());
    pmem_next_ = (end + kAlignment - 1) / kAlignment * kAlignment;
  }
  uint64_t addr = pmem_next_;
  // Past the guest's physical addresses, its driver's ioremap would fail.
  if (uint32_t bits = HostPhysicalAddressBits(); addr + backing.size() > (uint64_t{1} << bits)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pmem[%s]: %d MiB at %#x ends past the %d-bit physical addresses of this host's CPUs",
        pmem.id, backing.size() >> 20, addr, bits));
  }
  // Slots after guest memory's (RAM's and the hotplug region's), addresses
  // after both.
  uint32_t slot = memory_.memory_slots() + pmem_slots_;
  ASSIGN_OR_RETURN(std::unique_ptr<virtio::pmem::PmemDevice> device,
                   virtio::pmem::PmemDevice::Create(pmem, std::move(backing), addr));
  const virtio::pmem::PmemBacking& mapped = device->backing();
  RETURN_IF_ERROR(vm_.SetUserMemoryRegion(slot, addr, mapped.size(), mapped.host(),
                                          /*log_dirty=*/false, pmem.read_only));
  pmem_slots_++;
  pmem_next_ = addr + mapped.size();
  return AttachVirtio(std::move(device), cmdline);
}

absl::Status DeviceManager::AttachMemoryHotplug(const MemoryHotplugConfig& config,
                                               std::string* cmdline) {
  const GuestRegion* region = memory_.hotplug_region();
  if (region == nullptr) return absl::InternalError("memory-hotplug: no region reserved");
  const uint32_t first_slot = static_cast<uint32_t>(memory_.regions().size());
  const uint64_t slot_size = memory_.hotplug_slot_size();
  const bool log_dirty = memory_.dirty_tracking();
  // Open to the VMM before KVM maps it; out of KVM before it is closed.
  auto hook = [this, region, first_slot, slot_size, log_dirty](size_t index,
                                                               bool plug) -> absl::Status {
    uint64_t gpa = region->guest_addr + index * slot_size;
    uint8_t* host = region->host + index * slot_size;
    uint32_t slot = first_slot + static_cast<uint32_t>(index);
    if (plug) {
      RETURN_IF_ERROR(memory_.SetHotplugSlot(index, true));
      absl::Status st = absl::OkStatus();
      if (hotplug_fill_fd_ >= 0) {
        st = ReadFully(hotplug_fill_fd_, {host, slot_size},
                       memory_.total_size() + index * slot_size);
      }
      if (st.ok()) st = vm_.SetUserMemoryRegion(slot, gpa, slot_size, host, log_dirty);
      if (!st.ok()) (void)memory_.SetHotplugSlot(index, false);
      return st;
    }
    RETURN_IF_ERROR(vm_.SetUserMemoryRegion(slot, gpa, 0, host, log_dirty));
    // Out of KVM, and no device reaches it any more: a failed PROT_NONE
    // only loses the second guard, and the slot must count as closed.
    if (absl::Status st = memory_.SetHotplugSlot(index, false); !st.ok()) {
      LOG_WARN_RATELIMITED("memory-hotplug: %s", std::string(st.message()).c_str());
    }
    return absl::OkStatus();
  };
  if (config.slot_size_mib % 128 != 0) {
    LOG_WARN("memory-hotplug: slot_size_mib %d is no multiple of Linux's 128 MiB memory block: "
             "the guest cannot use all of the region",
             config.slot_size_mib);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<virtio::mem::MemDevice> device,
                   virtio::mem::MemDevice::Create(config, region->guest_addr, hook));
  return AttachVirtio(std::move(device), cmdline);
}

absl::Status DeviceManager::AttachVirtio(std::unique_ptr<virtio::VirtioDevice> device,
                                         std::string* cmdline) {
  const size_t index = virtio_.size();
  const uint32_t irq = kVirtioFirstIrq + index;
  if (irq >= x86_64::kIoapicPins) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "too many virtio devices: at most %d", x86_64::kIoapicPins - kVirtioFirstIrq));
  }
  const uint64_t base = x86_64::kMmioDevicesStart + index * virtio::MmioTransport::kWindowSize;
  ASSIGN_OR_RETURN(UniqueFd irq_fd, IrqEventFd(vm_, irq));
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
    if (q < fds.size()) Signal(fds[q]);
  });
  if (int fd = transport->device().backend_fd(); fd >= 0) {
    RETURN_IF_ERROR(loop_.Add(fd, transport->device().backend_events(),
                              [transport](uint32_t events) { transport->NotifyBackend(events); }));
  }
  if (int fd = transport->device().timer_fd(); fd >= 0) {
    RETURN_IF_ERROR(loop_.Add(fd, EPOLLIN, [transport](uint32_t) { transport->NotifyTimer(); }));
  }
  virtio_.push_back(transport);
  absl::StrAppend(cmdline, absl::StrFormat(" virtio_mmio.device=4K@%#x:%d", base, irq));
  return absl::OkStatus();
}

virtio::MmioTransport* DeviceManager::Find(uint32_t type, std::string_view id) {
  for (const auto& t : virtio_) {
    // Kind and id are fixed when the device is made: no lock needed.
    if (t->device().device_type() == type && t->device().id() == id) return t.get();
  }
  return nullptr;
}

absl::Status DeviceManager::SendCtrlAltDel() {
  if (!i8042_->SendCtrlAltDel()) {
    return absl::FailedPreconditionError(
        "the guest has not enabled its keyboard: no driver would see Ctrl-Alt-Del");
  }
  LOG_INFO("sent Ctrl-Alt-Del to the guest");
  return absl::OkStatus();
}

void DeviceManager::CollectMetrics(Metrics* metrics) {
  SerialCounters s = serial_->counters();
  metrics->Group("uart").counts = {{"error_count", s.error_count},
                                   {"flush_count", s.flush_count},
                                   {"missed_read_count", s.missed_read_count},
                                   {"missed_write_count", s.missed_write_count},
                                   {"read_count", s.read_count},
                                   {"write_count", s.write_count},
                                   {"rate_limiter_dropped_bytes", s.rate_limiter_dropped_bytes},
                                   {"dropped_input", s.dropped_input}};
  I8042Counters k = i8042_->counters();
  metrics->Group("i8042").counts = {{"error_count", k.error_count},
                                    {"missed_read_count", k.missed_read_count},
                                    {"missed_write_count", k.missed_write_count},
                                    {"read_count", k.read_count},
                                    {"reset_count", k.reset_count},
                                    {"write_count", k.write_count},
                                    {"dropped_bytes", k.dropped_bytes}};
  uint64_t interrupts = 0;
  for (const auto& t : virtio_) {
    interrupts += t->interrupts();
    t->WithDevice([metrics](virtio::VirtioDevice& d) {
      MetricGroup& g = metrics->Group(d.metrics_name());
      d.AppendMetrics(&g.counts);
      d.AppendLevels(&g.levels);
    });
  }
  metrics->Group("interrupts").counts.emplace_back("triggers", interrupts);
}

void DeviceManager::Quiesce() {
  for (const auto& t : virtio_) t->Quiesce();
}

void DeviceManager::Save(snapshot::SnapshotState* state) {
  state->serial = serial_->SaveState();
  state->i8042 = i8042_->SaveState();
  state->virtio.clear();
  for (const auto& t : virtio_) state->virtio.push_back(t->SaveState());
}

absl::Status DeviceManager::Restore(const snapshot::SnapshotState& state) {
  if (virtio_.size() != state.virtio.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the snapshot has %d virtio devices, its configuration %d",
                        state.virtio.size(), virtio_.size()));
  }
  serial_->RestoreState(state.serial);
  i8042_->RestoreState(state.i8042);
  for (size_t i = 0; i < state.virtio.size(); i++) {
    RETURN_IF_ERROR(virtio_[i]->RestoreState(state.virtio[i]));
  }
  return absl::OkStatus();
}

void DeviceManager::OnConsoleInput() {
  uint8_t buf[256];
  ssize_t n = ::read(console_in_, buf, sizeof(buf));
  if (n <= 0) {
    loop_.Remove(console_in_);  // EOF or error: no more console input
    return;
  }
  serial_->EnqueueInput(std::span(buf, n));
}

}  // namespace ember
