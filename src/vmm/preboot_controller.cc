#include "src/vmm/preboot_controller.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "src/common/status_macros.h"

namespace ember {
namespace {

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
  std::string dir = slash == std::string::npos ? "." : uds_path.substr(0, slash);
  if (dir.empty()) dir = "/";
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("vsock.uds_path ", uds_path, ": directory ",
                                                   dir, " does not exist"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VmmResult> PreBootController::Handle(const VmmAction& action) {
  return std::visit([this](const auto& a) { return Do(a); }, action);
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutMachineConfig& a) {
  RETURN_IF_ERROR(ValidateMachineConfig(a.config));
  config_.machine = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PatchMachineConfig& a) {
  MachineConfig m = config_.machine;
  if (a.vcpu_count) m.vcpu_count = *a.vcpu_count;
  if (a.mem_size_mib) m.mem_size_mib = *a.mem_size_mib;
  if (a.track_dirty_pages) m.track_dirty_pages = *a.track_dirty_pages;
  RETURN_IF_ERROR(ValidateMachineConfig(m));
  config_.machine = m;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutBootSource& a) {
  config_.boot_source = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutDrive& a) {
  std::vector<DriveConfig> drives = config_.drives;
  ReplaceById(drives, a.config, &DriveConfig::drive_id);
  RETURN_IF_ERROR(ValidateDrives(drives));
  config_.drives = std::move(drives);
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PatchDrive& a) {
  DriveConfig* drive = FindDrive(config_, a.drive_id);
  if (drive == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("there is no drive '", a.drive_id, "'"));
  }
  if (a.path_on_host) drive->path_on_host = *a.path_on_host;
  if (a.rate_limiter) drive->rate_limiter = ApplyUpdate(drive->rate_limiter, *a.rate_limiter);
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutNetworkInterface& a) {
  std::vector<NetConfig> net = config_.net;
  ReplaceById(net, a.config, &NetConfig::iface_id);
  RETURN_IF_ERROR(ValidateNet(net));
  config_.net = std::move(net);
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PatchNetworkInterface& a) {
  RETURN_IF_ERROR(CheckNetExists(config_, a.iface_id));
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PutBalloon& a) {
  RETURN_IF_ERROR(ValidateBalloon(a.config, config_.machine));
  config_.balloon = a.config;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const PatchBalloon& a) {
  RETURN_IF_ERROR(CheckBalloonTarget(config_, a.amount_mib));
  config_.balloon->amount_mib = a.amount_mib;
  return std::monostate();
}

absl::StatusOr<VmmResult> PreBootController::Do(const GetBalloon&) {
  if (!config_.balloon) return absl::InvalidArgumentError("there is no balloon device");
  return *config_.balloon;
}

absl::StatusOr<VmmResult> PreBootController::Do(const PatchBalloonStats& a) {
  if (!config_.balloon) return absl::InvalidArgumentError("there is no balloon device");
  config_.balloon->stats_polling_interval_s = a.stats_polling_interval_s;
  return std::monostate();
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

absl::StatusOr<VmmResult> PreBootController::Do(const GetBalloonStats&) {
  return absl::FailedPreconditionError("balloon statistics exist once the microVM runs");
}

}  // namespace ember
