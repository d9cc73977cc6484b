#include "src/devices/virtio/balloon/balloon_device.h"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/byte_codec.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::balloon {
namespace {

constexpr uint64_t kPagesPerMib = (1 << 20) / kPageSize;

constexpr char kHintingOff[] =
    "Attempting to use hinting when not enabled: give free_page_hinting true in PUT /balloon "
    "before the start";
constexpr char kNotActive[] =
    "the guest's balloon driver has not started the device yet: try again once it has";

// One statistic in the stats buffer (5.5.6.3): a packed tag and value.
constexpr size_t kStatSize = 10;

const char* StatName(uint16_t tag) {
  static const char* const kNames[] = {"swap-in",   "swap-out",     "major-faults",
                                       "minor-faults", "free-memory", "total-memory",
                                       "available-memory", "disk-caches", "hugetlb-allocations",
                                       "hugetlb-failures", "oom-kill", "alloc-stall",
                                       "async-scan", "direct-scan", "async-reclaim",
                                       "direct-reclaim"};
  return tag < std::size(kNames) ? kNames[tag] : "unknown";
}

}  // namespace

absl::StatusOr<std::unique_ptr<BalloonDevice>> BalloonDevice::Create(const BalloonConfig& config) {
  UniqueFd timer;
  if (config.stats_polling_interval_s > 0) {
    timer.reset(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!timer.valid()) return ErrnoStatus("balloon: timerfd_create");
  }
  auto dev = std::unique_ptr<BalloonDevice>(new BalloonDevice(config, std::move(timer)));
  dev->SetTarget(config.amount_mib);
  return dev;
}

uint64_t BalloonDevice::features() const {
  uint64_t f = kFeatureVersion1;
  if (stats_enabled()) f |= kFeatureStatsVq;
  if (config_.deflate_on_oom) f |= kFeatureDeflateOnOom;
  // Not PAGE_POISON: memory restored from a snapshot file reads back the
  // file's bytes once dropped, not a value the guest could rely on. A
  // guest that poisons or zeroes freed pages then does not report them.
  if (config_.free_page_hinting) f |= kFeatureFreePageHint;
  if (config_.free_page_reporting) f |= kFeatureReporting;
  return f;
}

std::vector<uint16_t> BalloonDevice::queue_max_sizes() const {
  size_t n = 2 + stats_enabled() + config_.free_page_hinting + config_.free_page_reporting;
  return std::vector<uint16_t>(n, kQueueSize);
}

uint32_t BalloonDevice::backend_events() const { return EPOLLIN; }

void BalloonDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // Little-endian u32s: num_pages (the target) at 0, actual at 4,
  // free_page_hint_cmd_id at 8, poison_val at 12 (unused: no PAGE_POISON).
  uint8_t config[16] = {};
  std::memcpy(config, &target_pages_, 4);
  std::memcpy(config + 4, &actual_pages_, 4);
  std::memcpy(config + 8, &host_cmd_, 4);
  for (size_t i = 0; i < data.size(); i++) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

void BalloonDevice::WriteConfig(uint64_t offset, std::span<const uint8_t> data) {
  // Only `actual` belongs to the driver.
  uint8_t actual[4];
  std::memcpy(actual, &actual_pages_, 4);
  for (size_t i = 0; i < data.size(); i++) {
    if (offset + i >= 4 && offset + i < 8) actual[offset + i - 4] = data[i];
  }
  std::memcpy(&actual_pages_, actual, 4);
}

void BalloonDevice::SetTarget(uint64_t amount_mib) {
  target_pages_ = static_cast<uint32_t>(amount_mib * kPagesPerMib);
  if (interrupt_ != nullptr) interrupt_->Trigger(kInterruptConfigChange);
}

absl::Status BalloonDevice::SetStatsInterval(uint32_t seconds) {
  if ((seconds == 0) != !stats_enabled()) {
    return absl::InvalidArgumentError(
        "balloon statistics cannot be turned on or off after the start");
  }
  config_.stats_polling_interval_s = seconds;
  if (mem_ == nullptr) return absl::OkStatus();  // armed on activation
  itimerspec every = {};
  every.it_interval.tv_sec = seconds;
  every.it_value.tv_nsec = 1;  // the first update at once
  if (timerfd_settime(timer_.get(), 0, &every, nullptr) < 0) {
    return ErrnoStatus("balloon: timerfd_settime");
  }
  return absl::OkStatus();
}

absl::Status BalloonDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                     Interrupt* interrupt, uint64_t features) {
  size_t next = 2;
  auto place = [&](uint64_t feature) {
    return features & feature ? std::optional<size_t>(next++) : std::nullopt;
  };
  stats_queue_ = place(kFeatureStatsVq);
  hint_queue_ = place(kFeatureFreePageHint);
  report_queue_ = place(kFeatureReporting);
  if (next > queues.size()) return absl::InvalidArgumentError("virtio-balloon: too few queues");
  for (size_t i = 0; i < next; i++) {
    if (!queues[i].ready()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "virtio-balloon needs queue ", i, " ready for the features the driver accepted"));
    }
  }
  mem_ = &mem;
  queues_ = queues.first(next);
  interrupt_ = interrupt;
  if (stats_enabled()) {
    itimerspec every = {};
    every.it_interval.tv_sec = every.it_value.tv_sec = config_.stats_polling_interval_s;
    if (timerfd_settime(timer_.get(), 0, &every, nullptr) < 0) {
      return ErrnoStatus("balloon: timerfd_settime");
    }
  }
  return absl::OkStatus();
}

namespace {
// The encoding of the guest-visible state beyond the queues (the pages it
// reported, the statistics buffer it gave us), field by field after its
// own version: the transport keeps these bytes opaque.
// Version 2 adds free page hinting's commands; version 1 is still read.
constexpr uint16_t kStateVersion = 2;
}  // namespace

std::vector<uint8_t> BalloonDevice::SaveDeviceState() const {
  ByteWriter w;
  w.U16(kStateVersion);
  w.U32(target_pages_);
  w.U32(actual_pages_);
  w.Bool(stats_head_.has_value());
  w.U16(stats_head_.value_or(0));
  w.U32(host_cmd_);
  w.Bool(guest_cmd_.has_value());
  w.U32(guest_cmd_.value_or(0));
  w.U32(last_run_id_);
  w.Bool(acknowledge_on_stop_);
  return w.Take();
}

absl::Status BalloonDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  ByteReader r(state);
  uint16_t version = 0, stats_head = 0;
  uint32_t target = 0, actual = 0;
  bool has_stats_head = false;
  uint32_t host_cmd = kHintCmdStop, guest_cmd = 0, last_run_id = kHintCmdDone;
  bool has_guest_cmd = false, acknowledge_on_stop = false;
  if (!r.U16(&version)) return r.Finish("virtio-balloon state");
  if (version != 1 && version != kStateVersion) {
    return absl::InvalidArgumentError(absl::StrCat("virtio-balloon state version ", version,
                                                   "; this Ember reads versions 1 and ",
                                                   kStateVersion));
  }
  // The reader fails for good at the first short read; Finish says so.
  r.U32(&target);
  r.U32(&actual);
  r.Bool(&has_stats_head);
  r.U16(&stats_head);
  if (version >= 2) {
    r.U32(&host_cmd);
    r.Bool(&has_guest_cmd);
    r.U32(&guest_cmd);
    r.U32(&last_run_id);
    r.Bool(&acknowledge_on_stop);
  }
  RETURN_IF_ERROR(r.Finish("virtio-balloon state"));
  if (has_stats_head && (!stats_enabled() || stats_head >= kQueueSize)) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-balloon state: a statistics buffer at descriptor ", stats_head,
                     stats_enabled() ? ", beyond the queue" : ", but statistics are off"));
  }
  if ((host_cmd != kHintCmdStop || has_guest_cmd) && !config_.free_page_hinting) {
    return absl::InvalidArgumentError(
        "virtio-balloon state: a free page hinting command, but hinting is off");
  }
  if (last_run_id < kHintCmdDone) {  // the next run's id would be DONE
    return absl::InvalidArgumentError("virtio-balloon state: hinting run id 0");
  }
  target_pages_ = target;
  actual_pages_ = actual;
  if (has_stats_head) stats_head_ = stats_head;
  host_cmd_ = host_cmd;
  guest_cmd_ = has_guest_cmd ? std::optional<uint32_t>(guest_cmd) : std::nullopt;
  last_run_id_ = last_run_id;
  acknowledge_on_stop_ = acknowledge_on_stop;
  return absl::OkStatus();
}

void BalloonDevice::StopTimer() {
  if (!timer_.valid()) return;
  // Disarming also clears an expiry not yet read: the fd is not ready after.
  itimerspec off = {};
  timerfd_settime(timer_.get(), 0, &off, nullptr);
}

void BalloonDevice::Reset() {
  StopTimer();
  mem_ = nullptr;
  queues_ = {};
  interrupt_ = nullptr;
  stats_head_.reset();
  actual_pages_ = 0;
  stats_queue_ = hint_queue_ = report_queue_ = std::nullopt;
  // A new driver starts with no run of its own. An open run ends here, or
  // the new driver would start it at its first configuration change and
  // hold the memory it takes until someone says DONE.
  guest_cmd_.reset();
  if (host_cmd_ >= kHintFirstRunId) host_cmd_ = kHintCmdDone;
}

bool BalloonDevice::Discard(uint64_t addr, uint64_t len) {
  if (len == 0 || addr % kPageSize != 0 || len % kPageSize != 0) return false;
  return mem_->Discard(addr, len);
}

void BalloonDevice::Inflate(const DescriptorChain& chain) {
  // Runs of consecutive frames become one madvise each.
  uint64_t run_start = 0, run_pages = 0;
  auto flush = [&] {
    if (run_pages == 0) return;
    if (Discard(run_start * kPageSize, run_pages * kPageSize)) {
      balloon_counters_.inflated_pages += run_pages;
    } else {
      counters_.request_errors++;
    }
    run_pages = 0;
  };
  for (const Descriptor& d : chain.descriptors) {
    if (d.device_writable) {
      counters_.request_errors++;
      continue;
    }
    for (uint64_t at = 0; at + 4 <= d.len; at += 4) {
      absl::StatusOr<uint32_t> pfn = mem_->ReadObj<uint32_t>(d.addr + at);
      if (!pfn.ok()) break;
      if (!mem_->Contains(uint64_t{*pfn} * kPageSize, kPageSize)) {
        counters_.request_errors++;  // a frame outside guest memory
        continue;
      }
      bool extends = run_pages > 0 && *pfn == run_start + run_pages &&
                     mem_->Contains(run_start * kPageSize, (run_pages + 1) * kPageSize);
      if (!extends) {
        flush();
        run_start = *pfn;
      }
      run_pages++;
    }
  }
  flush();
}

void BalloonDevice::ReadStats(const DescriptorChain& chain) {
  for (const Descriptor& d : chain.descriptors) {
    if (d.device_writable) continue;
    for (uint64_t at = 0; at + kStatSize <= d.len; at += kStatSize) {
      absl::StatusOr<uint16_t> tag = mem_->ReadObj<uint16_t>(d.addr + at);
      absl::StatusOr<uint64_t> value = mem_->ReadObj<uint64_t>(d.addr + at + 2);
      if (tag.ok() && value.ok()) stats_[*tag] = *value;
    }
  }
  balloon_counters_.stats_updates++;
  if (LogEnabled(LogLevel::kDebug)) {
    std::string line;
    for (const auto& [tag, value] : stats_) absl::StrAppend(&line, " ", StatName(tag), "=", value);
    LOG_DEBUG_RATELIMITED("balloon statistics:%s", line);  // as often as the guest sends them
  }
}

// A report is a list of free blocks the guest holds back until the buffer
// is used: each is dropped before the guest may reuse it.
void BalloonDevice::Report(const DescriptorChain& chain) {
  for (const Descriptor& d : chain.descriptors) {
    DropFree(d, "reported", &balloon_counters_.reports, &balloon_counters_.reported_bytes,
             &balloon_counters_.report_fails);
  }
}

void BalloonDevice::DropFree(const Descriptor& d, const char* kind, uint64_t* ranges,
                             uint64_t* bytes, uint64_t* fails) {
  ++*ranges;
  if (Discard(d.addr, d.len)) {
    *bytes += d.len;
    return;
  }
  ++*fails;
  LOG_WARN_RATELIMITED("balloon: a %s range (0x%x, %d bytes) is not whole pages of guest "
                       "memory; left as it is", kind, d.addr, d.len);
}

// The hinting queue carries the guest's commands (a 4-byte driver-readable
// buffer: the run's id at its start, STOP at its end) and its hints
// (device-writable buffers: blocks it allocated for the run and holds until
// the host says DONE). Hints are dropped only while the run they belong to
// is the host's current one: once the host has said DONE, or started
// another run, the guest may be freeing those blocks already.
void BalloonDevice::Hint(const DescriptorChain& chain) {
  for (const Descriptor& d : chain.descriptors) {
    if (!d.device_writable && d.len == 4) {
      absl::StatusOr<uint32_t> cmd = mem_->ReadObj<uint32_t>(d.addr);
      if (!cmd.ok()) continue;  // the queue checked it is in guest memory
      // A guest has no DONE to give: taken as its STOP, as Firecracker does.
      // Only the stop of the current run ends it: a guest leaving an older
      // run for a new one stops the old one first.
      bool current = guest_cmd_ == host_cmd_;
      guest_cmd_ = *cmd == kHintCmdDone ? kHintCmdStop : *cmd;
      if (guest_cmd_ == kHintCmdStop && current && acknowledge_on_stop_ &&
          host_cmd_ >= kHintFirstRunId) {
        SetHostCmd(kHintCmdDone);
      }
      continue;
    }
    // Firecracker counts only the hints it acts on; stale ones are left.
    if (!d.device_writable || host_cmd_ < kHintFirstRunId || guest_cmd_ != host_cmd_) continue;
    DropFree(d, "hinted", &balloon_counters_.hints, &balloon_counters_.hinted_bytes,
             &balloon_counters_.hint_fails);
  }
}

void BalloonDevice::SetHostCmd(uint32_t cmd) {
  host_cmd_ = cmd;
  if (interrupt_ != nullptr) interrupt_->Trigger(kInterruptConfigChange);
}

absl::Status BalloonDevice::StartHinting(bool acknowledge_on_stop) {
  if (!config_.free_page_hinting) {
    return absl::InvalidArgumentError(kHintingOff);
  }
  if (mem_ == nullptr) return absl::FailedPreconditionError(kNotActive);
  // What the guest queued for the last run is served under that run.
  if (hint_queue_) Drain(*hint_queue_);
  acknowledge_on_stop_ = acknowledge_on_stop;
  last_run_id_ = last_run_id_ == UINT32_MAX ? kHintFirstRunId : last_run_id_ + 1;
  SetHostCmd(last_run_id_);
  return absl::OkStatus();
}

absl::Status BalloonDevice::StopHinting() {
  if (!config_.free_page_hinting) {
    return absl::InvalidArgumentError(kHintingOff);
  }
  if (mem_ == nullptr) return absl::FailedPreconditionError(kNotActive);
  if (hint_queue_) Drain(*hint_queue_);
  SetHostCmd(kHintCmdDone);
  return absl::OkStatus();
}

void BalloonDevice::Resumed() {
  if (host_cmd_ >= kHintFirstRunId && mem_ != nullptr) (void)StopHinting();
}

absl::StatusOr<HintingStatus> BalloonDevice::hinting_status() const {
  if (!config_.free_page_hinting) {
    return absl::InvalidArgumentError(kHintingOff);
  }
  return HintingStatus{host_cmd_, guest_cmd_};
}

void BalloonDevice::Drain(size_t index) {
  if (mem_ != nullptr && index < queues_.size() && !queues_[index].broken()) ProcessQueue(index);
}

void BalloonDevice::ProcessQueue(size_t index) {
  if (mem_ == nullptr || index >= queues_.size()) return;
  Queue& q = queues_[index];
  for (;;) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = q.Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;
    if (index == kInflateQueue) {
      Inflate(**chain);
    } else if (index == kDeflateQueue) {
      for (const Descriptor& d : (*chain)->descriptors) balloon_counters_.deflated_pages += d.len / 4;
    } else if (index == report_queue_) {
      Report(**chain);
    } else if (index == hint_queue_) {
      Hint(**chain);
    } else {
      // The guest's answer to a statistics request: read it and keep the
      // buffer until the next request.
      ReadStats(**chain);
      if (stats_head_) (void)q.AddUsed(*mem_, *stats_head_, 0);
      stats_head_ = (*chain)->head;
      continue;
    }
    if (!q.AddUsed(*mem_, (*chain)->head, 0).ok()) break;
  }
  SignalUsed(q, *mem_, interrupt_);
}

void BalloonDevice::ProcessBackend(uint32_t) {
  uint64_t expirations;
  if (read(timer_.get(), &expirations, sizeof(expirations)) != sizeof(expirations)) return;
  if (mem_ == nullptr || !stats_head_ || !stats_queue_) return;
  // Handing the buffer back asks the guest for fresh statistics.
  Queue& q = queues_[*stats_queue_];
  (void)q.AddUsed(*mem_, *stats_head_, 0);
  stats_head_.reset();
  SignalUsed(q, *mem_, interrupt_);
}

void BalloonDevice::DrainBackend(uint32_t) {
  if (!timer_.valid()) return;
  uint64_t expirations;
  (void)!read(timer_.get(), &expirations, sizeof(expirations));
  StopTimer();
}

}  // namespace ember::virtio::balloon
