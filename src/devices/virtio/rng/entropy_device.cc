#include "src/devices/virtio/rng/entropy_device.h"

#include <sys/random.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::rng {

namespace {

// What a request asks for: its buffers, up to kMaxBytesPerRequest.
uint64_t Wanted(const DescriptorChain& chain) {
  uint64_t bytes = 0;
  for (const Descriptor& d : chain.descriptors) bytes += d.len;
  return std::min<uint64_t>(bytes, kMaxBytesPerRequest);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EntropyDevice>> EntropyDevice::Create(const EntropyConfig& config) {
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return ErrnoStatus("entropy: timerfd_create");
  return std::unique_ptr<EntropyDevice>(new EntropyDevice(config, std::move(timer)));
}

absl::Status EntropyDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                     Interrupt* interrupt, uint64_t) {
  if (queues.size() != 1 || !queues[0].ready()) {
    return absl::InvalidArgumentError("virtio-rng needs its request queue ready");
  }
  mem_ = &mem;
  queue_ = &queues[0];
  interrupt_ = interrupt;
  return absl::OkStatus();
}

void EntropyDevice::Reset() {
  ArmTimer(timer_.get(), 0);  // timerfd_settime: the one timer call the vcpu filter allows
  armed_until_ns_ = 0;
  mem_ = nullptr;
  queue_ = nullptr;
  interrupt_ = nullptr;
}

std::vector<uint8_t> EntropyDevice::SaveDeviceState() const { return SaveLimiters({&limiter_}); }

absl::Status EntropyDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  RETURN_IF_ERROR(RestoreLimiters(state, {&limiter_}, "virtio-rng"));
  ArmTimer(timer_.get(), 1);
  return absl::OkStatus();
}

bool EntropyDevice::Admit(uint64_t bytes) {
  uint64_t now = MonotonicNs();
  if (limiter_.Consume(1, bytes, now)) return true;
  entropy_counters_.entropy_rate_limiter_throttled++;
  // Once per wait, not once per kick while it lasts.
  if (limiter_.blocked_until_ns() != armed_until_ns_) {
    armed_until_ns_ = limiter_.blocked_until_ns();
    ArmTimer(timer_.get(), limiter_.WaitNs(now));
  }
  return false;
}

void EntropyDevice::ProcessQueue(size_t index) {
  if (mem_ == nullptr || index != 0) return;
  Serve();
}

void EntropyDevice::ProcessTimer() {
  entropy_counters_.rate_limiter_event_count++;
  armed_until_ns_ = 0;
  if (mem_ != nullptr) Serve();
}

uint32_t EntropyDevice::Fill(const DescriptorChain& chain) {
  // Every buffer must be the device's to write (5.4.6.2); a chain with a
  // read-only one is answered with nothing, as Firecracker does.
  for (const Descriptor& d : chain.descriptors) {
    if (!d.device_writable) {
      entropy_counters_.entropy_event_fails++;
      counters_.request_errors++;
      return 0;
    }
  }
  uint32_t written = 0;
  for (const Descriptor& d : chain.descriptors) {
    uint32_t len = std::min(d.len, kMaxBytesPerRequest - written);
    if (len == 0) break;
    // The queue checked the range: the slice cannot fail.
    absl::StatusOr<std::span<uint8_t>> host = mem_->Slice(d.addr, len);
    if (!host.ok()) return written;
    for (size_t done = 0; done < host->size();) {
      ssize_t n = getrandom(host->data() + done, host->size() - done, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        entropy_counters_.host_rng_fails++;
        LOG_WARN_RATELIMITED("entropy: getrandom failed: %s", strerror(errno));
        return 0;  // never hand out bytes that were not filled
      }
      done += static_cast<size_t>(n);
    }
    written += len;
  }
  return written;
}

void EntropyDevice::Serve() {
  uint64_t run_bytes = 0;
  bool used = false;
  while (run_bytes < kMaxBytesPerRun) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = queue_->Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;  // empty, or broken (the transport sees)
    if (limiter_.enabled() && !Admit(Wanted(**chain))) {
      queue_->Undo();  // it waits in the ring for the limiter's timer
      break;
    }
    entropy_counters_.entropy_event_count++;
    uint32_t n = Fill(**chain);
    if (!queue_->AddUsed(*mem_, (*chain)->head, n).ok()) break;
    entropy_counters_.entropy_bytes += n;
    run_bytes += n;
    used = true;
  }
  // Work left: come back on the next turn of the loop.
  if (run_bytes >= kMaxBytesPerRun) ArmTimer(timer_.get(), 1);
  if (used) SignalUsed(*queue_, *mem_, interrupt_);
}

void EntropyDevice::AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const {
  VirtioDevice::AppendMetrics(out);
  out->insert(out->end(), {{"entropy_event_count", entropy_counters_.entropy_event_count},
                           {"entropy_bytes", entropy_counters_.entropy_bytes},
                           {"entropy_event_fails", entropy_counters_.entropy_event_fails},
                           {"host_rng_fails", entropy_counters_.host_rng_fails},
                           {"entropy_rate_limiter_throttled",
                            entropy_counters_.entropy_rate_limiter_throttled},
                           {"rate_limiter_event_count", entropy_counters_.rate_limiter_event_count}});
}

}  // namespace ember::virtio::rng
