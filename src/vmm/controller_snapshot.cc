// PUT /snapshot/create and /snapshot/load on the VMM thread (controller.h).
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
#include "src/vmm/controller.h"

namespace ember {
namespace {

constexpr off_t kMaxStateFile = 64 << 20;

absl::Status WriteWholeFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  // Written beside, then renamed: a reader never sees half a state file.
  std::string tmp = path + ".tmp";
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("snapshot_path ", path));
  if (::write(fd.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    unlink(tmp.c_str());
    return ErrnoStatus(absl::StrCat("writing ", tmp));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus(absl::StrCat("renaming to ", path));
  return absl::OkStatus();
}

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

absl::Status Controller::WriteSnapshot(const CreateSnapshot& a) {
  if (!config_codec_.to_json) return absl::InternalError("no configuration codec for snapshots");
  if (vm_ == nullptr) return absl::FailedPreconditionError("the microVM has not started yet");
  if (!vm_->paused()) {
    return absl::FailedPreconditionError(
        "pause the microVM first (PATCH /vm {\"state\": \"Paused\"})");
  }
  double start = MonotonicMs();
  ASSIGN_OR_RETURN(SnapshotState state, vm_->CaptureSnapshot());
  state.config_json = config_codec_.to_json(config_);
  RETURN_IF_ERROR(vm_->WriteMemoryFile(a.mem_file_path, a.diff));
  RETURN_IF_ERROR(WriteWholeFile(a.snapshot_path, snapshot::EncodeSnapshot(state)));
  LOG_INFO("snapshot created (%s): %s and %s in %.3f ms", a.diff ? "Diff" : "Full",
           a.snapshot_path, a.mem_file_path, MonotonicMs() - start);
  return absl::OkStatus();
}

absl::Status Controller::LoadFromSnapshot(const LoadSnapshot& a) {
  if (!config_codec_.from_json) return absl::InternalError("no configuration codec for snapshots");
  if (vm_ != nullptr) {
    return absl::FailedPreconditionError("a snapshot can only be loaded before the microVM starts");
  }
  if (config_.boot_source || !config_.drives.empty() || !config_.net.empty() || config_.balloon) {
    return absl::FailedPreconditionError(
        "a snapshot can only be loaded into an Ember that has not been configured");
  }
  double start = MonotonicMs();
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadStateFile(a.snapshot_path));
  ASSIGN_OR_RETURN(SnapshotState state, snapshot::DecodeSnapshot(bytes));
  absl::StatusOr<VmConfig> config = config_codec_.from_json(state.config_json);
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
  UniqueFd mem;
  if (!a.uffd) {
    mem.reset(open(a.mem_backend_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem.valid()) return ErrnoStatus(absl::StrCat("memory backend ", a.mem_backend_path));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
                   Vm::Restore(*config, io_, state, mem.get(), a.uffd ? a.mem_backend_path : ""));
  if (!a.resume_vm) vm->Pause();
  config_ = std::move(*config);
  vm_ = std::move(vm);
  LOG_INFO("snapshot loaded from %s in %.3f ms; %s", a.snapshot_path, MonotonicMs() - start,
           a.resume_vm ? "resuming" : "paused until PATCH /vm Resumed");
  return absl::OkStatus();
}

}  // namespace ember
