// PUT /snapshot/load on the VMM thread (controller.h); runtime_controller.cc
// creates snapshots.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/vmm/builder.h"
#include "src/vmm/controller.h"

namespace ember {
namespace {

constexpr off_t kMaxStateFile = 64 << 20;

absl::StatusOr<std::vector<uint8_t>> ReadStateFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("snapshot_path ", path));
  if (!S_ISREG(st.st_mode) || st.st_size > kMaxStateFile) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot_path ", path, " is not a regular file of at most 64 MiB"));
  }
  std::vector<uint8_t> bytes(st.st_size);
  if (pread(fd.get(), bytes.data(), bytes.size(), 0) != st.st_size) {
    return ErrnoStatus(absl::StrCat("reading ", path));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<VmmResult> Controller::Do(const LoadSnapshot& a) {
  if (runtime_) return runtime_->Handle(a);  // refused once running
  const VmConfig& current = preboot_.config();
  if (current.boot_source || !current.drives.empty() || !current.net.empty() || current.balloon ||
      current.vsock) {
    return absl::FailedPreconditionError(
        "a snapshot can only be loaded into an Ember that has not been configured");
  }
  double start = MonotonicMs();
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadStateFile(a.snapshot_path));
  ASSIGN_OR_RETURN(snapshot::SnapshotState state, snapshot::DecodeSnapshot(bytes));
  absl::StatusOr<VmConfig> config = codecs_.config_from_json(state.config_json);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the snapshot's configuration is refused: ", config.status().message()));
  }
  if (a.track_dirty_pages) config->machine.track_dirty_pages = true;
  for (const auto& override : a.network_overrides) {
    const std::string& iface = override.first;
    auto net = std::find_if(config->net.begin(), config->net.end(),
                            [&](const NetConfig& n) { return n.iface_id == iface; });
    if (net == config->net.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("network_overrides: the snapshot has no network interface '", iface, "'"));
    }
    net->host_dev_name = override.second;
  }
  if (a.vsock_uds_path) {
    if (!config->vsock) {
      return absl::InvalidArgumentError("vsock_override: the snapshot has no vsock device");
    }
    config->vsock->uds_path = *a.vsock_uds_path;
    RETURN_IF_ERROR(ValidateVsock(*config->vsock));
  }
  UniqueFd mem;
  if (!a.uffd) {
    mem.reset(open(a.mem_backend_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem.valid()) return ErrnoStatus(absl::StrCat("memory backend ", a.mem_backend_path));
  }
  // The snapshot keeps MMDS's configuration, not its data.
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
                   BuildFromSnapshot(*config, io_, state, mem.get(),
                                     a.uffd ? a.mem_backend_path : "", {&mmds_, &mmds_metrics_}));
  if (!a.resume_vm) vm->Pause();
  vm->latencies().load_snapshot_us = static_cast<uint64_t>((MonotonicMs() - start) * 1000);
  preboot_.config() = std::move(*config);
  ApplyMmdsConfig();
  Started(std::move(vm));
  LOG_INFO("snapshot loaded from %s in %.3f ms; %s", a.snapshot_path, MonotonicMs() - start,
           a.resume_vm ? "resuming" : "paused until PATCH /vm Resumed");
  return std::monostate();
}

}  // namespace ember
