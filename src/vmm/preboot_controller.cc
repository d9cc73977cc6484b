#include "src/vmm/preboot_controller.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/status_macros.h"
#include "src/vstate/guest_memory.h"

namespace ember {
namespace {

// The errno of opening `path` with `flags` (then closed), or 0, and in
// `*fifo` whether it opened a FIFO. Non-blocking, so that a FIFO named by
// mistake does not stall the VMM thread here; the caller refuses it, as a
// later plain read would wait on it (other files that are not regular are
// refused when they are read).
int OpenError(const std::string& path, int flags, bool* fifo) {
  int fd = open(path.c_str(), flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return errno;
  struct stat st;
  *fifo = fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
  close(fd);
  return 0;
}

// An errno as Rust's io::Error shows it in Firecracker's messages.
std::string OsError(int err) { return absl::StrCat(strerror(err), " (os error ", err, ")"); }

std::string MacText(const std::array<uint8_t, 6>& m) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

// Firecracker refuses a guest MAC another interface has.
absl::Status CheckMacFree(const std::vector<NetConfig>& net, const NetConfig& iface) {
  if (!iface.guest_mac) return absl::OkStatus();
  for (const NetConfig& other : net) {
    if (other.iface_id != iface.iface_id && other.guest_mac == iface.guest_mac) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Network config error: The MAC address is already in use: ", MacText(*iface.guest_mac),
          " (network-interfaces[", other.iface_id, "] has it)"));
    }
  }
  return absl::OkStatus();
}

// Replaces the entry with `item`'s id, or appends `item`.
template <typename T>
void ReplaceById(std::vector<T>& list, const T& item, std::string T::*id) {
  for (T& existing : list) {
    if (existing.*id == item.*id) {
      existing = item;
      return;
    }
  }
  list.push_back(item);
}

// Where the vsock device will listen: the path must be free and its
// directory must exist (Firecracker binds there when the request arrives;
// Ember binds at InstanceStart, so it checks now).
absl::Status CheckVsockPath(const std::string& uds_path) {
  struct stat st;
  if (lstat(uds_path.c_str(), &st) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vsock.uds_path ", uds_path, " already exists; remove it or choose another path"));
  }
  size_t slash = uds_path.rfind('/');
  std::string dir = slash == std::string::npos ? "."
                    : slash == 0                ? "/"
                                                : uds_path.substr(0, slash);
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("vsock.uds_path ", uds_path, ": directory ",
                                                   dir, " does not exist"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckBootSourceFiles(const BootSourceConfig& boot) {
  bool fifo = false;
  if (int err = OpenError(boot.kernel_image_path, O_RDONLY, &fifo)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Boot source error: The kernel file cannot be opened: ", OsError(err),
                     " (boot-source.kernel_image_path '", boot.kernel_image_path, "')"));
  }
  if (fifo) {
    return absl::InvalidArgumentError(
        absl::StrCat("Boot source error: The kernel file is a FIFO; name a regular file "
                     "(boot-source.kernel_image_path '", boot.kernel_image_path, "')"));
  }
  if (boot.initrd_path.empty()) return absl::OkStatus();
  if (int err = OpenError(boot.initrd_path, O_RDONLY, &fifo)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Boot source error: The initrd file cannot be opened due to invalid path or invalid "
        "permissions. ",
        OsError(err), " (boot-source.initrd_path '", boot.initrd_path, "')"));
  }
  if (fifo) {
    return absl::InvalidArgumentError(
        absl::StrCat("Boot source error: The initrd file is a FIFO; name a regular file "
                     "(boot-source.initrd_path '", boot.initrd_path, "')"));
  }
  return absl::OkStatus();
}

absl::Status CheckDriveFile(const DriveConfig& drive) {
  bool fifo = false;
  if (int err = OpenError(drive.path_on_host, drive.is_read_only ? O_RDONLY : O_RDWR, &fifo)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Drive config error: Unable to create the virtio block device: Virtio backend error: "
        "Error manipulating the backing file: ",
        OsError(err), " ", drive.path_on_host, " (drives[", drive.drive_id, "].path_on_host)"));
  }
  if (fifo) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Drive config error: ", drive.path_on_host,
        " is a FIFO; name a regular file or block device (drives[", drive.drive_id,
        "].path_on_host)"));
  }
  return absl::OkStatus();
}

absl::Status CheckPmemFile(const PmemConfig& pmem) {
  bool fifo = false;
  if (int err = OpenError(pmem.path_on_host, pmem.read_only ? O_RDONLY : O_RDWR, &fifo)) {
    return absl::InvalidArgumentError(absl::StrCat("pmem[", pmem.id, "].path_on_host ",
                                                   pmem.path_on_host, ": ", OsError(err)));
  }
  if (fifo) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pmem[", pmem.id, "].path_on_host ", pmem.path_on_host,
        " is a FIFO; name a regular file or block device"));
  }
  return absl::OkStatus();
}

absl::Status CheckHostResources(const VmConfig& config) {
  if (config.boot_source) RETURN_IF_ERROR(CheckBootSourceFiles(*config.boot_source));
  for (const DriveConfig& d : config.drives) RETURN_IF_ERROR(CheckDriveFile(d));
  for (const PmemConfig& p : config.pmem) RETURN_IF_ERROR(CheckPmemFile(p));
  for (const NetConfig& n : config.net) RETURN_IF_ERROR(CheckMacFree(config.net, n));
  return absl::OkStatus();
}

absl::StatusOr<VmmResult> PreBootController::Handle(const VmmAction& action) {
  return std::visit([this](const auto& a) { return Do(a); }, action);
}

// The configuration's own checks, and what this process's command line
// rules out: hugetlbfs memory is never merged (--merge-guest-memory).
absl::Status PreBootController::CheckMachine(const MachineConfig& m) {
  RETURN_IF_ERROR(ValidateMachineConfig(m));
  if (config_.balloon && config_.balloon->amount_mib > m.mem_size_mib) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Machine config error: The memory size (MiB) is smaller than the previously set balloon "
        "device target size. "
        "mem_size_mib %d is below the balloon's amount_mib %d.",
        m.mem_size_mib, config_.balloon->amount_mib));
  }
  if (m.huge_pages == HugePages::k2M && GuestMemory::mergeable_by_default()) {
    return absl::InvalidArgumentError(
        "machine-config.huge_pages \"2M\": this Ember runs with --merge-guest-memory, and KSM "
        "never merges hugetlbfs pages; use \"None\" or \"Transparent\"");
  }
  // Firecracker finds out at the start; the host's CPU is known now.
  if (m.cpu_template != StaticCpuTemplate::kNone) {
    if (!host_cpu_) host_cpu_ = x86_64::HostCpuModel();
    RETURN_IF_ERROR(x86_64::CheckStaticTemplateHost(m.cpu_template, *host_cpu_));
  }
  return absl::OkStatus();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutMachineConfig& a) {
  MachineConfig m = a.config;
  if (!a.sets_cpu_template) m.cpu_template = config_.machine.cpu_template;
  RETURN_IF_ERROR(CheckMachine(m));
  config_.machine = m;
  machine_configured_ = true;
  if (a.sets_cpu_template) config_.cpu_config.reset();
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PatchMachineConfig& a) {
  MachineConfig m = config_.machine;
  if (a.vcpu_count) m.vcpu_count = *a.vcpu_count;
  if (a.mem_size_mib) m.mem_size_mib = *a.mem_size_mib;
  if (a.track_dirty_pages) m.track_dirty_pages = *a.track_dirty_pages;
  if (a.huge_pages) m.huge_pages = *a.huge_pages;
  if (a.smt) m.smt = *a.smt;
  if (a.cpu_template) m.cpu_template = *a.cpu_template;
  RETURN_IF_ERROR(CheckMachine(m));
  config_.machine = m;
  machine_configured_ = true;
  if (a.cpu_template) config_.cpu_config.reset();
  return std::monostate();
}

// Firecracker opens the files when the request comes, not at the start.
absl::StatusOr<VmmResult> PreBootController::Do(const PutBootSource& a) {
  RETURN_IF_ERROR(CheckBootSourceFiles(a.config));
  config_.boot_source = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutDrive& a) {
  if (a.config.is_root_device) {
    for (const DriveConfig& d : config_.drives) {
      if (d.is_root_device && d.drive_id != a.config.drive_id) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Drive config error: A root block device already exists! (drives[", d.drive_id,
            "] is the root device)"));
      }
    }
    for (const PmemConfig& p : config_.pmem) {
      if (p.root_device) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Drive config error: Attempt to add block as a root device while the root device "
            "defined as a pmem device. Only one device, pmem or drive, can be the root device "
            "(pmem[", p.id, "] is)."));
      }
    }
  }
  std::vector<DriveConfig> drives = config_.drives;
  ReplaceById(drives, a.config, &DriveConfig::drive_id);
  RETURN_IF_ERROR(ValidateDrives(drives));
  RETURN_IF_ERROR(ValidatePmem(config_.pmem, drives));
  RETURN_IF_ERROR(CheckDriveFile(a.config));
  config_.drives = std::move(drives);
  return std::monostate();
}

// Mapped when the VM is built; opened now, as a drive's file is.
absl::StatusOr<VmmResult> PreBootController::Do(const PutPmem& a) {
  std::vector<PmemConfig> pmem = config_.pmem;
  ReplaceById(pmem, a.config, &PmemConfig::id);
  RETURN_IF_ERROR(ValidatePmem(pmem, config_.drives));
  RETURN_IF_ERROR(CheckPmemFile(a.config));
  config_.pmem = std::move(pmem);
  return std::monostate();
}

absl::Status PreBootController::CheckNetworkInterface(const NetConfig& iface) const {
  std::vector<NetConfig> net = config_.net;
  ReplaceById(net, iface, &NetConfig::iface_id);
  RETURN_IF_ERROR(ValidateNet(net));
  return CheckMacFree(config_.net, iface);
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutNetworkInterface& a) {
  RETURN_IF_ERROR(CheckNetworkInterface(a.config));
  ReplaceById(config_.net, a.config, &NetConfig::iface_id);
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutBalloon& a) {
  RETURN_IF_ERROR(ValidateBalloon(a.config, config_.machine));
  config_.balloon = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const GetBalloon&) {
  if (!config_.balloon) return absl::InvalidArgumentError(kNoBalloon);
  return *config_.balloon;
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutSerial& a) {
  config_.serial = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutVsock& a) {
  RETURN_IF_ERROR(ValidateVsock(a.config));
  RETURN_IF_ERROR(CheckVsockPath(a.config.uds_path));
  config_.vsock = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutEntropy& a) {
  config_.entropy = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutMmdsConfig& a) {
  RETURN_IF_ERROR(ValidateMmds(a.config, config_.net));
  config_.mmds = a.config;
  return std::monostate();
}

}  // namespace ember
