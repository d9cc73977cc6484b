// Vm's snapshot half: capturing a paused VM and rebuilding one from a
// snapshot (vm.h).
#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/snapshot/uffd.h"
#include "src/vmm/vm.h"

namespace ember {

absl::StatusOr<SnapshotState> Vm::CaptureSnapshot() const {
  SnapshotState s;
  for (const auto& t : virtio_) s.virtio.push_back(t->SaveState());
  ASSIGN_OR_RETURN(s.machine, SaveMachineState());
  for (const GuestRegion& r : memory_.regions()) s.memory.push_back({r.guest_addr, r.size});
  s.serial = serial_->SaveState();
  s.i8042 = i8042_->SaveState();
  return s;
}

absl::Status Vm::WriteMemoryFile(const std::string& path, bool diff) const {
  if (diff && !memory_.dirty_tracking()) {
    return absl::FailedPreconditionError(
        "Diff snapshots need machine-config.track_dirty_pages (or track_dirty_pages on load)");
  }
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("mem_file_path ", path));
  if (ftruncate(fd.get(), static_cast<off_t>(memory_.total_size())) != 0) {
    return ErrnoStatus(absl::StrCat("sizing ", path));
  }
  uint64_t file_offset = 0;
  for (size_t slot = 0; slot < memory_.regions().size(); slot++) {
    const GuestRegion& r = memory_.regions()[slot];
    std::vector<uint64_t> pages;
    if (memory_.dirty_tracking()) {
      // The guest's writes (KVM) and the VMM's (device emulation); taking
      // them also starts the next diff from here, after a Full one too.
      ASSIGN_OR_RETURN(pages, vm_.GetDirtyLog(slot, r.size));
      std::vector<uint64_t> vmm = memory_.TakeDirtyPages(slot);
      for (size_t i = 0; i < pages.size() && i < vmm.size(); i++) pages[i] |= vmm[i];
    }
    auto write = [&](uint64_t offset, uint64_t len) -> absl::Status {
      for (uint64_t done = 0; done < len;) {
        ssize_t n = pwrite(fd.get(), r.host + offset + done, len - done,
                           static_cast<off_t>(file_offset + offset + done));
        if (n <= 0) return ErrnoStatus(absl::StrCat("writing ", path), n < 0 ? errno : EIO);
        done += n;
      }
      return absl::OkStatus();
    };
    if (!diff) {
      RETURN_IF_ERROR(write(0, r.size));
    } else {
      for (uint64_t page = 0; page < r.size / 4096; page++) {
        if (pages[page / 64] & (uint64_t{1} << (page % 64))) RETURN_IF_ERROR(write(page * 4096, 4096));
      }
    }
    file_offset += r.size;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Restore(const VmConfig& config, ConsoleIo io,
                                                const SnapshotState& state, int mem_fd,
                                                const std::string& uffd_socket) {
  RETURN_IF_ERROR(ValidateMachineConfig(config.machine));
  if (state.machine.vcpus.size() != config.machine.vcpu_count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the snapshot has %d vCPU states for vcpu_count %d",
                        state.machine.vcpus.size(), config.machine.vcpu_count));
  }
  ASSIGN_OR_RETURN(std::vector<MemoryRange> expected,
                   x86_64::RamRanges(config.machine.mem_size_mib << 20));
  bool same = expected.size() == state.memory.size();
  for (size_t i = 0; same && i < expected.size(); i++) {
    same = expected[i].guest_addr == state.memory[i].guest_addr &&
           expected[i].size == state.memory[i].size;
  }
  if (!same) return absl::InvalidArgumentError("the snapshot's memory layout does not match its mem_size_mib");
  snapshot::UffdHandover uffd;
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm, CreateBare([&]() -> absl::StatusOr<GuestMemory> {
                     if (uffd_socket.empty()) return GuestMemory::MapFile(state.memory, mem_fd);
                     // Handed over before anything reads guest memory.
                     ASSIGN_OR_RETURN(GuestMemory mem, GuestMemory::Create(state.memory));
                     ASSIGN_OR_RETURN(uffd, snapshot::HandOverToUffdHandler(mem, uffd_socket));
                     return mem;
                   },
                   config.machine.track_dirty_pages));
  vm->uffd_ = std::move(uffd);
  // The same devices in the same order as at boot; the command line they
  // would add is the guest's business now.
  std::string unused_cmdline;
  RETURN_IF_ERROR(vm->AttachDevices(config, &unused_cmdline));
  if (vm->virtio_.size() != state.virtio.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the snapshot has %d virtio devices, its configuration %d", state.virtio.size(),
        vm->virtio_.size()));
  }
  RETURN_IF_ERROR(vm->AttachLegacyDevices(io, config.serial));
  // Registers come from the snapshot: the boot entry is never used.
  RETURN_IF_ERROR(vm->CreateVcpus(config.machine.vcpu_count, BootEntry{0, {}}));
  RETURN_IF_ERROR(vm->RestoreMachineState(state.machine));
  vm->serial_->RestoreState(state.serial);
  vm->i8042_->RestoreState(state.i8042);
  for (size_t i = 0; i < state.virtio.size(); i++) {
    RETURN_IF_ERROR(vm->virtio_[i]->RestoreState(state.virtio[i]));
  }
  return vm;
}

}  // namespace ember
