// Vm's snapshot half: capturing a paused VM and writing its memory (vm.h);
// builder.h rebuilds one from a snapshot.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/open_no_wait.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/vmm/vm.h"

namespace ember {
namespace {

absl::Status WriteAt(int fd, const std::string& path, const uint8_t* from, uint64_t len,
                     uint64_t offset) {
  for (uint64_t done = 0; done < len;) {
    ssize_t n = pwrite(fd, from + done, len - done, static_cast<off_t>(offset + done));
    if (n <= 0) return ErrnoStatus(absl::StrCat("writing ", path), n < 0 ? errno : EIO);
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<snapshot::SnapshotState> Vm::CaptureSnapshot() {
  if (!paused_) return absl::FailedPreconditionError("the VM must be paused to save its state");
  snapshot::SnapshotState s;
  // Devices first: finishing their in-flight requests may raise interrupts,
  // which the irqchip state saved next must hold.
  devices_.Save(&s);
  ASSIGN_OR_RETURN(s.machine, SaveMachineState());
  for (const GuestRegion& r : memory_.regions()) s.memory.push_back({r.guest_addr, r.size});
  return s;
}

absl::Status Vm::WriteMemoryFile(const std::string& path, bool diff) {
  if (!CopyLeasedFile(path)) {
    return absl::InternalError(absl::StrCat("guest memory could not be copied out of ", path,
                                            " before writing it; the VM stops"));
  }
  // A FIFO or device there would not hold a memory file (nor, opened
  // plainly, let this thread go until someone read it).
  struct stat st;
  bool exists = stat(path.c_str(), &st) == 0;
  if (exists && !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("mem_file_path ", path,
                                                   " is not a regular file"));
  }
  const GuestRegion* hotplug = memory_.hotplug_region();
  uint64_t file_size = memory_.total_size() + (hotplug ? hotplug->size : 0);
  // As Firecracker: a Diff goes into a memory file of this VM's size that
  // is already there (its base, merged in place); anything else is
  // written afresh.
  bool merge = diff && exists && uint64_t(st.st_size) == file_size;
  UniqueFd fd = OpenNoWait(path, O_WRONLY | O_CREAT | (merge ? 0 : O_TRUNC), 0600);
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("mem_file_path ", path));
  if (ftruncate(fd.get(), static_cast<off_t>(file_size)) != 0) {
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
    } else if (diff) {
      // Without tracking, as Firecracker: every page in host memory.
      ASSIGN_OR_RETURN(pages, memory_.ResidentPages(slot));
    }
    auto write = [&](uint64_t offset, uint64_t len) {
      return WriteAt(fd.get(), path, r.host + offset, len, file_offset + offset);
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
  // Memory hotplug's region after RAM: its plugged slots whole (Diff
  // too), its unplugged ones holes the guest never reads.
  for (size_t i = 0; hotplug && i < hotplug->size / memory_.hotplug_slot_size(); i++) {
    if (!memory_.hotplug_slot_plugged(i)) continue;
    uint64_t at = i * memory_.hotplug_slot_size();
    RETURN_IF_ERROR(WriteAt(fd.get(), path, hotplug->host + at, memory_.hotplug_slot_size(),
                            file_offset + at));
  }
  return absl::OkStatus();
}

}  // namespace ember
