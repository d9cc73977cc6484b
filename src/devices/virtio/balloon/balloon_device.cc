#include "src/devices/virtio/balloon/balloon_device.h"

#include <sys/epoll.h>
#include <sys/mman.h>
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

// One statistic in the stats buffer (5.5.6.3): a packed tag and value.
constexpr size_t kStatSize = 10;

const char* StatName(uint16_t tag) {
  static const char* const kNames[] = {"swap-in",   "swap-out",     "major-faults",
                                       "minor-faults", "free-memory", "total-memory",
                                       "available-memory", "disk-caches", "hugetlb-allocations",
                                       "hugetlb-failures"};
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
  return f;
}

std::vector<uint16_t> BalloonDevice::queue_max_sizes() const {
  if (stats_enabled()) return {kQueueSize, kQueueSize, kQueueSize};
  return {kQueueSize, kQueueSize};
}

uint32_t BalloonDevice::backend_events() const { return EPOLLIN; }

void BalloonDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // num_pages (target) at 0, actual at 4, both little-endian u32.
  uint8_t config[8];
  std::memcpy(config, &target_pages_, 4);
  std::memcpy(config + 4, &actual_pages_, 4);
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
                                     Interrupt* interrupt, uint64_t) {
  for (const Queue& q : queues) {
    if (!q.ready()) return absl::InvalidArgumentError("virtio-balloon needs all its queues ready");
  }
  mem_ = &mem;
  queues_ = queues;
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
constexpr uint16_t kStateVersion = 1;
}  // namespace

std::vector<uint8_t> BalloonDevice::SaveDeviceState() const {
  ByteWriter w;
  w.U16(kStateVersion);
  w.U32(target_pages_);
  w.U32(actual_pages_);
  w.Bool(stats_head_.has_value());
  w.U16(stats_head_.value_or(0));
  return w.Take();
}

absl::Status BalloonDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  ByteReader r(state);
  uint16_t version = 0, stats_head = 0;
  uint32_t target = 0, actual = 0;
  bool has_stats_head = false;
  if (!r.U16(&version)) return r.Finish("virtio-balloon state");
  if (version != kStateVersion) {
    return absl::InvalidArgumentError(absl::StrCat("virtio-balloon state version ", version,
                                                   "; this Ember reads version ", kStateVersion));
  }
  // The reader fails for good at the first short read; Finish says so.
  r.U32(&target);
  r.U32(&actual);
  r.Bool(&has_stats_head);
  r.U16(&stats_head);
  RETURN_IF_ERROR(r.Finish("virtio-balloon state"));
  if (has_stats_head && (!stats_enabled() || stats_head >= kQueueSize)) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-balloon state: a statistics buffer at descriptor ", stats_head,
                     stats_enabled() ? ", beyond the queue" : ", but statistics are off"));
  }
  target_pages_ = target;
  actual_pages_ = actual;
  if (has_stats_head) stats_head_ = stats_head;
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
}

void BalloonDevice::Inflate(const DescriptorChain& chain) {
  // Runs of consecutive frames become one madvise each.
  uint64_t run_start = 0, run_pages = 0;
  auto flush = [&] {
    if (run_pages == 0) return;
    absl::StatusOr<std::span<uint8_t>> host = mem_->Slice(run_start * kPageSize, run_pages * kPageSize);
    if (host.ok() && madvise(host->data(), host->size(), MADV_DONTNEED) == 0) {
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
  if (mem_ == nullptr || !stats_head_ || queues_.size() <= kStatsQueue) return;
  // Handing the buffer back asks the guest for fresh statistics.
  Queue& q = queues_[kStatsQueue];
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
