#include "src/vmm/runtime_controller.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "src/common/clock.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/devices/virtio/balloon/balloon_device.h"
#include "src/devices/virtio/mem/mem_device.h"
#include "src/devices/virtio/pmem/pmem_device.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/net/net_device.h"

namespace ember {
namespace {

using virtio::balloon::BalloonDevice;
using virtio::block::BlockDevice;
using virtio::net::NetDevice;

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

}  // namespace

absl::StatusOr<VmmResult> RuntimeController::Handle(const VmmAction& action) {
  return std::visit([this](const auto& a) { return Do(a); }, action);
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchDrive& a) {
  DriveConfig* drive = FindDrive(config_, a.drive_id);
  if (drive == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("there is no drive '", a.drive_id, "'"));
  }
  if (!a.path_on_host && !a.rate_limiter) {  // Firecracker refuses it too
    return absl::InvalidArgumentError(
        "Unable to patch the block device: the PATCH changes nothing; give path_on_host or "
        "rate_limiter");
  }
  if (a.path_on_host) {
    // A file the VM maps (vm.h): the open would wait out Ember's own lease.
    if (!drive->is_read_only && !vm_->CopyLeasedFile(*a.path_on_host)) {
      return absl::InternalError("guest memory mapped from the new file could not be copied");
    }
    RETURN_IF_ERROR(vm_->devices().WithDevice<BlockDevice>(
        a.drive_id, [&](BlockDevice& d) { return d.SwapBacking(*a.path_on_host); }));
    drive->path_on_host = *a.path_on_host;
  }
  if (a.rate_limiter) {
    RETURN_IF_ERROR(vm_->devices().WithDevice<BlockDevice>(a.drive_id, [&](BlockDevice& d) {
      d.UpdateRateLimiter(*a.rate_limiter);
      return absl::OkStatus();
    }));
    drive->rate_limiter = ApplyUpdate(drive->rate_limiter, *a.rate_limiter);
  }
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchPmem& a) {
  auto pmem = std::find_if(config_.pmem.begin(), config_.pmem.end(),
                           [&](const PmemConfig& p) { return p.id == a.id; });
  if (pmem == config_.pmem.end()) {
    return absl::InvalidArgumentError(absl::StrCat("there is no pmem device '", a.id, "'"));
  }
  if (!a.rate_limiter) return std::monostate();
  RETURN_IF_ERROR(vm_->devices().WithDevice<virtio::pmem::PmemDevice>(
      a.id, [&](virtio::pmem::PmemDevice& d) {
        d.UpdateRateLimiter(*a.rate_limiter);
        return absl::OkStatus();
      }));
  pmem->rate_limiter = ApplyUpdate(pmem->rate_limiter, *a.rate_limiter);
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchMemoryHotplug& a) {
  RETURN_IF_ERROR(vm_->devices().WithDevice<virtio::mem::MemDevice>(
      "", [&](virtio::mem::MemDevice& d) {
        return d.SetRequestedSize(uint64_t{a.requested_size_mib} << 20);
      }));
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const GetMemoryHotplug&) {
  return vm_->devices().WithDevice<virtio::mem::MemDevice>(
      "", [](virtio::mem::MemDevice& d) -> absl::StatusOr<VmmResult> {
        virtio::mem::MemStatus s = d.status();
        auto mib = [](uint64_t bytes) { return static_cast<uint32_t>(bytes >> 20); };
        return MemoryHotplugStatus{mib(s.total_size), mib(s.slot_size), mib(s.block_size),
                                   mib(s.plugged_size), mib(s.requested_size)};
      });
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchNetworkInterface& a) {
  RETURN_IF_ERROR(CheckNetExists(config_, a.iface_id));
  NetConfig& net = *std::find_if(config_.net.begin(), config_.net.end(),
                                 [&](const NetConfig& n) { return n.iface_id == a.iface_id; });
  // Firecracker accepts a PATCH that names no limiter, and changes nothing.
  if (!a.rx_rate_limiter && !a.tx_rate_limiter) return std::monostate();
  std::optional<RateLimiterConfig> rx = net.rx_rate_limiter, tx = net.tx_rate_limiter;
  if (a.rx_rate_limiter) rx = ApplyUpdate(rx, *a.rx_rate_limiter);
  if (a.tx_rate_limiter) tx = ApplyUpdate(tx, *a.tx_rate_limiter);
  RETURN_IF_ERROR(vm_->devices().WithDevice<NetDevice>(a.iface_id, [&](NetDevice& d) {
    d.UpdateRateLimiters(a.rx_rate_limiter, a.tx_rate_limiter);
    return absl::OkStatus();
  }));
  net.rx_rate_limiter = rx;
  net.tx_rate_limiter = tx;
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchBalloon& a) {
  RETURN_IF_ERROR(CheckBalloonTarget(config_, a.amount_mib));
  RETURN_IF_ERROR(vm_->devices().WithDevice<BalloonDevice>("", [&](BalloonDevice& b) {
    b.SetTarget(a.amount_mib);
    return absl::OkStatus();
  }));
  config_.balloon->amount_mib = a.amount_mib;
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const GetBalloon&) {
  if (!config_.balloon) return absl::InvalidArgumentError(kNoBalloon);
  return *config_.balloon;
}

absl::StatusOr<VmmResult> RuntimeController::Do(const GetBalloonStats&) {
  return vm_->devices().WithDevice<BalloonDevice>(
      "", [](BalloonDevice& b) -> absl::StatusOr<VmmResult> {
        if (b.stats_polling_interval_s() == 0) {
          return absl::InvalidArgumentError(
              "balloon statistics are off: set stats_polling_interval_s");
        }
        return BalloonStats{b.target_pages(), b.actual_pages(), b.stats()};
      });
}

void RuntimeController::BalloonResumed() {
  if (!config_.balloon) return;
  (void)vm_->devices().WithDevice<BalloonDevice>("", [](BalloonDevice& b) {
    b.Resumed();
    return absl::OkStatus();
  });
}

absl::StatusOr<VmmResult> RuntimeController::Do(const StartBalloonHinting& a) {
  RETURN_IF_ERROR(vm_->devices().WithDevice<BalloonDevice>(
      "", [&](BalloonDevice& b) { return b.StartHinting(a.acknowledge_on_stop); }));
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const StopBalloonHinting&) {
  RETURN_IF_ERROR(
      vm_->devices().WithDevice<BalloonDevice>("", [](BalloonDevice& b) { return b.StopHinting(); }));
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const GetBalloonHintingStatus&) {
  return vm_->devices().WithDevice<BalloonDevice>(
      "", [](BalloonDevice& b) -> absl::StatusOr<VmmResult> {
        ASSIGN_OR_RETURN(virtio::balloon::HintingStatus s, b.hinting_status());
        return BalloonHintingStatus{s.host_cmd, s.guest_cmd};
      });
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchBalloonStats& a) {
  RETURN_IF_ERROR(vm_->devices().WithDevice<BalloonDevice>(
      "", [&](BalloonDevice& b) { return b.SetStatsInterval(a.stats_polling_interval_s); }));
  config_.balloon->stats_polling_interval_s = a.stats_polling_interval_s;
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const SendCtrlAltDel&) {
  RETURN_IF_ERROR(vm_->devices().SendCtrlAltDel());
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const PatchVmState& a) {
  double start = MonotonicMs();
  if (a.paused && !vm_->paused()) vm_->Pause();
  if (!a.paused && vm_->paused()) {
    vm_->Resume();
    BalloonResumed();
  }
  auto took_us = static_cast<uint64_t>((MonotonicMs() - start) * 1000);
  (a.paused ? vm_->latencies().pause_vm_us : vm_->latencies().resume_vm_us) = took_us;
  return std::monostate();
}

absl::StatusOr<VmmResult> RuntimeController::Do(const CreateSnapshot& a) {
  if (!vm_->paused()) {
    return absl::FailedPreconditionError(
        "pause the microVM first (PATCH /vm {\"state\": \"Paused\"})");
  }
  double start = MonotonicMs();
  ASSIGN_OR_RETURN(snapshot::SnapshotState state, vm_->CaptureSnapshot());
  state.config_json = to_json_(config_);
  RETURN_IF_ERROR(vm_->WriteMemoryFile(a.mem_file_path, a.diff));
  RETURN_IF_ERROR(WriteWholeFile(a.snapshot_path, snapshot::EncodeSnapshot(state)));
  auto took_us = static_cast<uint64_t>((MonotonicMs() - start) * 1000);
  (a.diff ? vm_->latencies().diff_create_snapshot_us : vm_->latencies().full_create_snapshot_us) =
      took_us;
  LOG_INFO("snapshot created (%s): %s and %s in %.3f ms", a.diff ? "Diff" : "Full",
           a.snapshot_path, a.mem_file_path, MonotonicMs() - start);
  return std::monostate();
}

}  // namespace ember
