#include "src/devices/virtio/mmio_transport.h"

#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio {
namespace {

// Register offsets (4.2.2).
enum : uint64_t {
  kMagic = 0x000,
  kVersion = 0x004,
  kDeviceId = 0x008,
  kVendorId = 0x00c,
  kDeviceFeatures = 0x010,
  kDeviceFeaturesSel = 0x014,
  kDriverFeatures = 0x020,
  kDriverFeaturesSel = 0x024,
  kQueueSel = 0x030,
  kQueueNumMax = 0x034,
  kQueueNum = 0x038,
  kQueueReady = 0x044,
  kQueueNotify = 0x050,
  kInterruptStatus = 0x060,
  kInterruptAck = 0x064,
  kStatus = 0x070,
  kQueueDescLow = 0x080,
  kQueueDescHigh = 0x084,
  kQueueDriverLow = 0x090,
  kQueueDriverHigh = 0x094,
  kQueueDeviceLow = 0x0a0,
  kQueueDeviceHigh = 0x0a4,
  kConfigGeneration = 0x0fc,
  kConfig = 0x100,
};

constexpr uint32_t kMagicValue = 0x74726976;  // "virt"
constexpr uint32_t kMmioVersion = 2;

uint64_t SetHalf(uint64_t value, bool high, uint32_t half) {
  return high ? (value & 0xffffffffull) | (uint64_t{half} << 32)
              : (value & ~0xffffffffull) | half;
}

}  // namespace

MmioTransport::MmioTransport(std::unique_ptr<VirtioDevice> device, const GuestMemory* mem,
                             UniqueFd irq)
    : device_(std::move(device)), mem_(mem), irq_(std::move(irq)) {
  for (uint16_t max : device_->queue_max_sizes()) queues_.emplace_back(max);
}

void MmioTransport::Trigger(uint32_t status_bit) {
  // A driver reading a 64-bit field in halves sees the change (4.2.2.2);
  // devices call this under the lock (mu_), as register reads take it.
  if (status_bit & kInterruptConfigChange) config_generation_++;
  interrupts_.fetch_add(1, std::memory_order_relaxed);
  interrupt_status_.fetch_or(status_bit);
  uint64_t one = 1;
  (void)!::write(irq_.get(), &one, sizeof(one));
}

uint32_t MmioTransport::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

Queue* MmioTransport::SelectedQueue() {
  return queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
}

void MmioTransport::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= kConfig) {
    device_->ReadConfig(offset - kConfig, data);
    return;
  }
  // Registers are 32 bits wide and read whole (4.2.2.1).
  if (data.size() != 4 || offset % 4) {
    std::fill(data.begin(), data.end(), 0);
    return;
  }
  uint32_t v = ReadRegister(offset);
  std::memcpy(data.data(), &v, 4);
}

uint32_t MmioTransport::ReadRegister(uint64_t offset) {
  switch (offset) {
    case kMagic: return kMagicValue;
    case kVersion: return kMmioVersion;
    case kDeviceId: return device_->device_type();
    case kVendorId: return 0;
    case kDeviceFeatures:
      return device_features_sel_ > 1
                 ? 0
                 : static_cast<uint32_t>(device_->features() >> (32 * device_features_sel_));
    case kQueueNumMax: return SelectedQueue() ? SelectedQueue()->max_size() : 0;
    case kQueueReady: return SelectedQueue() && SelectedQueue()->ready() ? 1 : 0;
    case kInterruptStatus: return interrupt_status_.load();
    case kStatus: return status_;
    case kConfigGeneration: return config_generation_;
    default: return 0;
  }
}

void MmioTransport::Write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= kConfig) {
    device_->WriteConfig(offset - kConfig, data);
    return;
  }
  if (data.size() != 4 || offset % 4) return;
  uint32_t v;
  std::memcpy(&v, data.data(), 4);
  WriteRegister(offset, v);
}

void MmioTransport::WriteRegister(uint64_t offset, uint32_t v) {
  // Queue layout may change only while the queue is off and the driver has
  // not finished (4.2.3.2); later writes are ignored.
  Queue* q = SelectedQueue();
  bool queue_writable = q != nullptr && !q->ready() && !(status_ & kStatusDriverOk);
  switch (offset) {
    case kDeviceFeaturesSel: device_features_sel_ = v; return;
    case kDriverFeaturesSel: driver_features_sel_ = v; return;
    case kDriverFeatures:
      if ((status_ & kStatusDriver) && !(status_ & kStatusFeaturesOk) && driver_features_sel_ < 2) {
        driver_features_ = SetHalf(driver_features_, driver_features_sel_ == 1, v);
      }
      return;
    case kQueueSel: queue_sel_ = v; return;
    case kQueueNum:
      if (queue_writable) q->set_size(static_cast<uint16_t>(std::min<uint32_t>(v, 0xffff)));
      return;
    case kQueueReady:
      if (q != nullptr && !(status_ & kStatusDriverOk)) q->set_ready(v == 1);
      return;
    case kQueueDescLow:
    case kQueueDescHigh:
      if (queue_writable) q->set_desc_table(SetHalf(q->desc_table(), offset == kQueueDescHigh, v));
      return;
    case kQueueDriverLow:
    case kQueueDriverHigh:
      if (queue_writable) q->set_avail_ring(SetHalf(q->avail_ring(), offset == kQueueDriverHigh, v));
      return;
    case kQueueDeviceLow:
    case kQueueDeviceHigh:
      if (queue_writable) q->set_used_ring(SetHalf(q->used_ring(), offset == kQueueDeviceHigh, v));
      return;
    case kQueueNotify:
      if (notify_fallback_) notify_fallback_(v);
      return;
    case kInterruptAck: interrupt_status_.fetch_and(~v); return;
    case kStatus: WriteStatus(v); return;
    default: return;
  }
}

void MmioTransport::WriteStatus(uint32_t value) {
  if (value == 0) {
    ResetDevice();
    return;
  }
  // Bits are only ever added, in order (3.1.1); anything else is ignored.
  if ((value & status_) != status_) return;
  uint32_t added = value & ~status_;
  if (added & kStatusFeaturesOk) {
    uint64_t accepted = driver_features_ & device_->features();
    if (!(status_ & kStatusDriver) || !(accepted & kFeatureVersion1)) {
      value &= ~kStatusFeaturesOk;  // the driver reads it back and gives up
    }
    driver_features_ = accepted;
  }
  if (added & kStatusDriverOk) {
    if (!(value & kStatusFeaturesOk)) return;
    bool event_idx = driver_features_ & kFeatureEventIdx;
    for (size_t i = 0; i < queues_.size(); i++) {
      if (!queues_[i].ready()) continue;
      queues_[i].set_event_idx(event_idx);
      if (absl::Status st = queues_[i].Validate(*mem_); !st.ok()) {
        status_ = value & ~kStatusDriverOk;
        NeedsReset("queue " + std::to_string(i) + ": " + std::string(st.message()));
        return;
      }
    }
    if (absl::Status st = device_->Activate(*mem_, queues_, this, driver_features_); !st.ok()) {
      device_->counters().activate_fails++;
      status_ = value & ~kStatusDriverOk;
      NeedsReset(std::string(st.message()));
      return;
    }
    activated_ = true;
    // Drivers may make buffers available (and kick) before DRIVER_OK, as
    // Linux's balloon does with its first statistics.
    NotifyEveryQueue();
  }
  status_ = value;
}

void MmioTransport::Quiesce() {
  std::lock_guard lock(mu_);
  if (activated_) device_->Quiesce();
}

MmioTransport::State MmioTransport::SaveState() {
  std::lock_guard lock(mu_);
  if (activated_) device_->Quiesce();
  State s;
  s.device_type = device_->device_type();
  s.registers = {status_, device_features_sel_, driver_features_sel_, queue_sel_,
                 driver_features_, interrupt_status_.load(), config_generation_, activated_};
  for (const Queue& q : queues_) s.queues.push_back(q.SaveState());
  s.device = device_->SaveDeviceState();
  return s;
}

absl::Status MmioTransport::RestoreState(const State& s) {
  std::lock_guard lock(mu_);
  if (s.device_type != device_->device_type() || s.queues.size() != queues_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio device type %d with %d queues in the snapshot, type %d with %d here",
        s.device_type, s.queues.size(), device_->device_type(), queues_.size()));
  }
  for (size_t i = 0; i < queues_.size(); i++) queues_[i].RestoreState(s.queues[i]);
  const Registers& r = s.registers;
  status_ = r.status;
  device_features_sel_ = r.device_features_sel;
  driver_features_sel_ = r.driver_features_sel;
  queue_sel_ = r.queue_sel;
  driver_features_ = r.driver_features;
  interrupt_status_ = r.interrupt_status;
  config_generation_ = r.config_generation;
  if (r.activated) {
    for (Queue& q : queues_) {
      if (q.ready()) RETURN_IF_ERROR(q.Validate(*mem_));
    }
    RETURN_IF_ERROR(device_->Activate(*mem_, queues_, this, driver_features_));
    activated_ = true;
  }
  // Before a driver, a device still holds what the host gave it (a balloon
  // target, memory plugged for a driver since reset).
  RETURN_IF_ERROR(device_->RestoreDeviceState(s.device));
  // A notification the old VMM had not read is lost with its eventfds,
  // and under EVENT_IDX the guest does not give it again.
  if (activated_) NotifyEveryQueue();
  return absl::OkStatus();
}

void MmioTransport::NotifyEveryQueue() {
  // Through the eventfds: processed on the VMM thread, outside mu_.
  if (!notify_fallback_) return;
  for (uint32_t i = 0; i < queues_.size(); i++) {
    if (queues_[i].ready()) notify_fallback_(i);
  }
}

void MmioTransport::Registers::Encode(ByteWriter& w) const {
  for (uint32_t v : {status, device_features_sel, driver_features_sel, queue_sel}) w.U32(v);
  w.U64(driver_features);
  w.U32(interrupt_status);
  w.U32(config_generation);
  w.Bool(activated);
}

bool MmioTransport::Registers::Decode(ByteReader& r) {
  return r.U32(&status) && r.U32(&device_features_sel) && r.U32(&driver_features_sel) &&
         r.U32(&queue_sel) && r.U64(&driver_features) && r.U32(&interrupt_status) &&
         r.U32(&config_generation) && r.Bool(&activated);
}

void MmioTransport::State::Encode(ByteWriter& w) const {
  w.U32(device_type);
  registers.Encode(w);
  w.U32(static_cast<uint32_t>(queues.size()));
  for (const Queue::State& q : queues) q.Encode(w);
  w.Bytes(device);
}

bool MmioTransport::State::Decode(ByteReader& r) {
  uint32_t n;
  if (!r.U32(&device_type) || !registers.Decode(r) || !r.Count(&n, kMaxQueues, 1)) {
    return false;
  }
  queues.assign(n, {});
  for (Queue::State& q : queues) {
    if (!q.Decode(r)) return false;
  }
  return r.Bytes(&device, kMaxDeviceState);
}

void MmioTransport::NeedsReset(const std::string& why) {
  if (status_ & kStatusNeedsReset) return;
  // A guest can break its queues as often as it resets the device.
  LOG_WARN_RATELIMITED("virtio device type %d needs reset: %s", device_->device_type(), why);
  device_->counters().queue_errors++;
  status_ |= kStatusNeedsReset;
  Trigger(kInterruptConfigChange);
}

void MmioTransport::ResetDevice() {
  device_->Reset();
  for (Queue& q : queues_) q.Reset();
  status_ = 0;
  interrupt_status_ = 0;
  device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
  driver_features_ = 0;
  activated_ = false;
}

void MmioTransport::NotifyBackend(uint32_t events) {
  std::lock_guard lock(mu_);
  if (!activated_ || (status_ & kStatusNeedsReset)) {
    // The readiness is consumed all the same: a level-triggered fd left
    // ready would wake the VMM loop forever (VirtioDevice::DrainBackend).
    device_->DrainBackend(events);
    return;
  }
  device_->ProcessBackend(events);
  for (size_t i = 0; i < queues_.size(); i++) {
    if (queues_[i].broken()) NeedsReset(queues_[i].error());
  }
}

void MmioTransport::NotifyTimer() {
  std::lock_guard lock(mu_);
  uint64_t expirations;
  (void)!::read(device_->timer_fd(), &expirations, sizeof(expirations));
  if (!activated_ || (status_ & kStatusNeedsReset)) return;
  device_->ProcessTimer();
  for (size_t i = 0; i < queues_.size(); i++) {
    if (queues_[i].broken()) NeedsReset(queues_[i].error());
  }
}

void MmioTransport::Notify(uint32_t index) {
  std::lock_guard lock(mu_);
  if (!activated_ || index >= queues_.size() || !queues_[index].ready() ||
      (status_ & kStatusNeedsReset)) {
    return;
  }
  if (index < DeviceCounters::kMaxQueues) device_->counters().queue_events[index]++;
  device_->ProcessQueue(index);
  if (queues_[index].broken()) NeedsReset(queues_[index].error());
}

}  // namespace ember::virtio
