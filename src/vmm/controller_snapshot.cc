// PUT /snapshot/load on the VMM thread (controller.h), and Ember's
// PUT /snapshot/working-set on a restored VM (docs/working-set.md);
// runtime_controller.cc creates snapshots.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/open_no_wait.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/vmm/arch/x86_64/cpu_state.h"
#include "src/vmm/builder.h"
#include "src/vmm/controller.h"
#include "src/vmm/runtime_controller.h"
#include "src/vmm/snapshot/working_set.h"

namespace ember {
namespace {

constexpr off_t kMaxStateFile = 64 << 20;

absl::StatusOr<std::vector<uint8_t>> ReadStateFile(const std::string& path) {
  UniqueFd fd = OpenNoWait(path, O_RDONLY);
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("snapshot_path ", path));
  if (!S_ISREG(st.st_mode) || st.st_size > kMaxStateFile) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot_path ", path, " is not a regular file of at most 64 MiB"));
  }
  // read, not pread: PUT /snapshot/working-set reads it on a running VM,
  // whose VMM thread's seccomp filter has read only.
  std::vector<uint8_t> bytes(st.st_size);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("reading ", path));
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat(path, " shrank while read"));
    done += n;
  }
  return bytes;
}

}  // namespace

absl::StatusOr<VmmResult> Controller::Do(const LoadSnapshot& a) {
  if (runtime_) return runtime_->Handle(a);  // refused once running
  const VmConfig& current = preboot_.config();
  // Firecracker's list: what the boot reads, not the logger, metrics,
  // serial or cpu-config.
  if (preboot_.machine_configured() || current.boot_source || !current.drives.empty() ||
      !current.net.empty() || current.balloon || current.vsock || current.entropy ||
      !current.pmem.empty() || current.memory_hotplug || current.mmds) {
    return absl::FailedPreconditionError(
        "Load snapshot error: Loading a microVM snapshot not allowed after configuring "
        "boot-specific resources. "
        "A snapshot is loaded into an Ember that has not been configured: its configuration "
        "is the snapshot's.");
  }
  double start = MonotonicMs();
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadStateFile(a.snapshot_path));
  ASSIGN_OR_RETURN(snapshot::SnapshotState state, snapshot::DecodeSnapshot(bytes));
  RETURN_IF_ERROR(UseClockRealtime(&state.machine.vm, a.clock_realtime));
  absl::StatusOr<VmConfig> config = codecs_.config_from_json(state.config_json);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the snapshot's configuration is refused: ", config.status().message()));
  }
  if (a.track_dirty_pages) config->machine.track_dirty_pages = true;
  if (a.huge_pages) config->machine.huge_pages = *a.huge_pages;
  if (config->machine.huge_pages == HugePages::k2M && !a.uffd) {
    return absl::InvalidArgumentError(
        "huge_pages \"2M\" needs mem_backend Uffd: hugetlbfs pages cannot map the memory file "
        "(load with huge_pages \"None\" or \"Transparent\" to use the File backend)");
  }
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
  std::optional<snapshot::WorkingSet> working_set;
  if (a.working_set_path) {
    if (a.uffd) {
      return absl::InvalidArgumentError(
          "working_set_path: with a Uffd backend the page-fault handler loads the working set "
          "(ember-uffd-handler --working-set); give it there");
    }
    ASSIGN_OR_RETURN(working_set, snapshot::ReadWorkingSet(*a.working_set_path, state.id));
  }
  double checked = MonotonicMs();
  UniqueFd mem;
  if (!a.uffd) {
    mem = OpenNoWait(a.mem_backend_path, O_RDONLY);
    struct stat st;
    if (!mem.valid() || fstat(mem.get(), &st) != 0) {
      return ErrnoStatus(absl::StrCat("memory backend ", a.mem_backend_path));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory backend ", a.mem_backend_path, " is not a regular file"));
    }
  }
  // The snapshot keeps MMDS's configuration, not its data.
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
                   BuildFromSnapshot(*config, io_, state, mem.get(),
                                     a.uffd ? a.mem_backend_path : "", {&mmds_, &mmds_metrics_},
                                     &spare_));
  double built = MonotonicMs();
  if (working_set) {
    // Before the first KVM_RUN: the guest then finds these pages mapped.
    ASSIGN_OR_RETURN(uint64_t pages, snapshot::PrefetchMapped(vm->memory(), *working_set));
    LOG_INFO("working set: %d pages (%d runs) mapped", pages, working_set->runs.size());
  }
  double prefetched = MonotonicMs();
  if (!a.resume_vm) vm->Pause();
  vm->latencies().load_snapshot_us = static_cast<uint64_t>((MonotonicMs() - start) * 1000);
  preboot_.config() = std::move(*config);
  ApplyMmdsConfig();
  Started(std::move(vm));
  if (a.resume_vm) runtime_->BalloonResumed();
  double now = MonotonicMs();
  LOG_INFO("snapshot loaded from %s in %.3f ms (state file read and checked %.3f, VM built %.3f, "
           "working set %.3f, handed to the runtime %.3f); %s",
           a.snapshot_path, now - start, checked - start, built - checked, prefetched - built,
           now - prefetched, a.resume_vm ? "resuming" : "paused until PATCH /vm Resumed");
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const RecordWorkingSet& a) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadStateFile(a.snapshot_path));
  ASSIGN_OR_RETURN(snapshot::SnapshotState state, snapshot::DecodeSnapshot(bytes));
  const GuestMemory& mem = vm_->memory();
  bool same = state.memory.size() == mem.regions().size();
  for (size_t i = 0; same && i < state.memory.size(); i++) {
    same = state.memory[i].guest_addr == mem.regions()[i].guest_addr &&
           state.memory[i].size == mem.regions()[i].size;
  }
  if (!same) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot/working-set: ", a.snapshot_path,
        " has another memory layout than this microVM; name the snapshot it was loaded from"));
  }
  ASSIGN_OR_RETURN(std::vector<snapshot::PageRun> runs, snapshot::PresentPages(mem));
  snapshot::WorkingSet set{state.id, std::move(runs)};
  RETURN_IF_ERROR(snapshot::WriteWorkingSet(a.working_set_path, set));
  LOG_INFO("working set of %d pages (%d runs) saved to %s", set.pages(), set.runs.size(),
           a.working_set_path);
  return std::monostate();
}

}  // namespace ember
