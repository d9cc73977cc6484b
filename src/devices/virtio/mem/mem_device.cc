#include "src/devices/virtio/mem/mem_device.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "src/common/byte_codec.h"
#include "src/common/clock.h"
#include "src/devices/virtio/rate_limiter.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::mem {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Records how long a request took into `agg` when it goes out of scope.
class Timed {
 public:
  explicit Timed(LatencyMetric& agg) : agg_(agg), start_(MonotonicNs()) {}
  ~Timed() { agg_.Record(MonotonicNs() - start_); }

 private:
  LatencyMetric& agg_;
  uint64_t start_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MemDevice>> MemDevice::Create(const MemoryHotplugConfig& config,
                                                             uint64_t guest_addr,
                                                             SlotHook hook) {
  RETURN_IF_ERROR(ValidateMemoryHotplug(config));
  if (guest_addr % (uint64_t{config.block_size_mib} * kMiB) != 0) {
    return absl::InvalidArgumentError("memory-hotplug: the region must start on a block");
  }
  return std::unique_ptr<MemDevice>(new MemDevice(config, guest_addr, std::move(hook)));
}

MemDevice::MemDevice(const MemoryHotplugConfig& config, uint64_t guest_addr, SlotHook hook)
    : addr_(guest_addr),
      region_size_(uint64_t{config.total_size_mib} * kMiB),
      block_size_(uint64_t{config.block_size_mib} * kMiB),
      slot_size_(uint64_t{config.slot_size_mib} * kMiB),
      plugged_(region_size_ / block_size_, false),
      slot_blocks_(region_size_ / slot_size_, 0),
      slot_plugged_(region_size_ / slot_size_, false),
      hook_(std::move(hook)) {}

void MemDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  uint8_t config[56] = {};
  auto put = [&config](size_t at, uint64_t v) { std::memcpy(config + at, &v, 8); };
  put(0, block_size_);
  // node_id (le16) and padding at 8..15 stay 0.
  put(16, addr_);
  put(24, region_size_);
  put(32, usable_size_);
  put(40, plugged_size_);
  put(48, requested_size_);
  for (size_t i = 0; i < data.size(); i++) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

void MemDevice::WriteConfig(uint64_t, std::span<const uint8_t>) {
  counters_.request_errors++;
  LOG_WARN_RATELIMITED("virtio-mem: the driver wrote the read-only configuration space");
}

absl::Status MemDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                 Interrupt* interrupt, uint64_t features) {
  if (queues.size() != 1 || !queues[0].ready()) {
    return absl::InvalidArgumentError("virtio-mem needs its request queue ready");
  }
  // Without it the driver may read unplugged memory, which is not there.
  if ((features & kFeatureUnpluggedInaccessible) == 0) {
    return absl::InvalidArgumentError(
        "virtio-mem: the driver did not accept VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE (Linux 5.16 "
        "or later needed)");
  }
  mem_ = &mem;
  queue_ = &queues[0];
  interrupt_ = interrupt;
  return absl::OkStatus();
}

void MemDevice::Reset() {
  // What is plugged stays: the next driver finds plugged_size and unplugs
  // it all first (5.15.5).
  mem_ = nullptr;
  queue_ = nullptr;
  interrupt_ = nullptr;
}

std::vector<uint8_t> MemDevice::SaveDeviceState() const {
  ByteWriter w;
  for (uint64_t v : {addr_, region_size_, block_size_, slot_size_, usable_size_, requested_size_}) {
    w.U64(v);
  }
  std::vector<uint8_t> bits((plugged_.size() + 7) / 8, 0);
  for (size_t b = 0; b < plugged_.size(); b++) bits[b / 8] |= plugged_[b] << (b % 8);
  w.Bytes(bits);
  return w.Take();
}

absl::Status MemDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  ByteReader r(state);
  uint64_t addr = 0, region = 0, block = 0, slot = 0, usable = 0, requested = 0;
  std::vector<uint8_t> bits;
  if (!r.U64(&addr) || !r.U64(&region) || !r.U64(&block) || !r.U64(&slot) || !r.U64(&usable) ||
      !r.U64(&requested) || !r.Bytes(&bits, static_cast<uint32_t>(plugged_.size() / 8 + 1))) {
    return r.Finish("virtio-mem state");
  }
  RETURN_IF_ERROR(r.Finish("virtio-mem state"));
  if (addr != addr_ || region != region_size_ || block != block_size_ || slot != slot_size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory-hotplug: the snapshot's region is %d MiB at %#x in slots of %d MiB and blocks "
        "of %d MiB; its configuration makes %d MiB at %#x, %d MiB and %d MiB",
        region / kMiB, addr, slot / kMiB, block / kMiB, region_size_ / kMiB, addr_,
        slot_size_ / kMiB, block_size_ / kMiB));
  }
  // The usable region always covers what is requested (SetRequestedSize).
  if (usable > region_size_ || usable % slot_size_ != 0 || requested > usable ||
      requested % block_size_ != 0 || bits.size() != (plugged_.size() + 7) / 8) {
    return absl::InvalidArgumentError("virtio-mem state: sizes out of range");
  }
  uint64_t plugged = 0;
  for (size_t b = 0; b < plugged_.size(); b++) {
    bool on = (bits[b / 8] >> (b % 8)) & 1;
    if (on && (b + 1) * block_size_ > usable) {
      return absl::InvalidArgumentError("virtio-mem state: a plugged block past the usable region");
    }
    plugged += on;
  }
  for (size_t b = 0; b < plugged_.size(); b++) Mark(b, (bits[b / 8] >> (b % 8)) & 1);
  usable_size_ = usable;
  requested_size_ = requested;
  plugged_size_ = plugged * block_size_;
  if (!plugged_.empty() && !SyncSlots({0, plugged_.size()})) {
    return absl::InternalError("memory-hotplug: a plugged slot could not be opened again");
  }
  return absl::OkStatus();
}

absl::Status MemDevice::SetRequestedSize(uint64_t bytes) {
  if (bytes % block_size_ != 0 || bytes > region_size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "requested_size_mib %d must be a multiple of block_size_mib (%d) and at most "
        "total_size_mib (%d)",
        bytes / kMiB, block_size_ / kMiB, region_size_ / kMiB));
  }
  requested_size_ = bytes;
  // The usable region only grows (but for UNPLUG_ALL), in whole slots.
  uint64_t usable = (bytes + slot_size_ - 1) / slot_size_ * slot_size_;
  usable_size_ = std::max(usable_size_, usable);
  if (interrupt_ != nullptr) interrupt_->Trigger(kInterruptConfigChange);
  return absl::OkStatus();
}

MemStatus MemDevice::status() const {
  return {region_size_, slot_size_, block_size_, plugged_size_, requested_size_};
}

void MemDevice::ProcessQueue(size_t index) {
  if (mem_ == nullptr || index != 0) return;
  counters_mem_.queue_event_count++;
  bool used = false;
  for (;;) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = queue_->Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;  // empty, or broken (the transport sees)
    const DescriptorChain& c = **chain;
    // A request the device reads, then room for the answer (5.15.6).
    uint32_t written = 0;
    if (c.descriptors.size() != 2 || c.descriptors[0].device_writable ||
        c.descriptors[0].len < kRequestBytes || !c.descriptors[1].device_writable ||
        c.descriptors[1].len < kResponseBytes) {
      counters_mem_.queue_event_fails++;
      counters_.request_errors++;
      LOG_WARN_RATELIMITED("virtio-mem: a malformed request, answered with nothing");
    } else {
      uint8_t req[kRequestBytes];
      uint8_t resp[kResponseBytes] = {};
      if (mem_->Read(c.descriptors[0].addr, req).ok()) {
        uint16_t type, nb_blocks;
        uint64_t addr;
        std::memcpy(&type, req, 2);
        std::memcpy(&addr, req + 8, 8);
        std::memcpy(&nb_blocks, req + 16, 2);
        auto [answer, state] = Handle(type, addr, nb_blocks);
        std::memcpy(resp, &answer, 2);
        std::memcpy(resp + 8, &state, 2);
        if (mem_->Write(c.descriptors[1].addr, resp).ok()) written = kResponseBytes;
      }
      if (written == 0) {
        counters_mem_.queue_event_fails++;
        counters_.request_errors++;
      }
    }
    if (!queue_->AddUsed(*mem_, c.head, written).ok()) break;
    used = true;
  }
  if (used) SignalUsed(*queue_, *mem_, interrupt_);
}

std::pair<uint16_t, uint16_t> MemDevice::Handle(uint16_t type, uint64_t addr,
                                                uint16_t nb_blocks) {
  switch (type) {
    case kRequestPlug: {
      Timed t(plug_agg_);
      counters_mem_.plug_count++;
      std::optional<Range> r = UsableRange(addr, nb_blocks);
      if (r && plugged_size_ + r->blocks * block_size_ > requested_size_) {
        counters_mem_.plug_fails++;
        return {kResponseNack, 0};  // more than the host asked for
      }
      if (!r || PluggedIn(*r) != 0) {
        counters_mem_.plug_fails++;
        return {kResponseError, 0};
      }
      // ERROR would make Linux's driver give the device up for good.
      if (!Update(*r, true)) {
        counters_mem_.plug_fails++;
        return {kResponseBusy, 0};
      }
      counters_mem_.plug_bytes += r->blocks * block_size_;
      return {kResponseAck, 0};
    }
    case kRequestUnplug: {
      Timed t(unplug_agg_);
      counters_mem_.unplug_count++;
      std::optional<Range> r = UsableRange(addr, nb_blocks);
      if (!r || PluggedIn(*r) != r->blocks || !Update(*r, false)) {
        counters_mem_.unplug_fails++;
        return {kResponseError, 0};
      }
      counters_mem_.unplug_bytes += r->blocks * block_size_;
      return {kResponseAck, 0};
    }
    case kRequestUnplugAll: {
      Timed t(unplug_all_agg_);
      counters_mem_.unplug_all_count++;
      if (!Update({0, plugged_.size()}, false)) {
        counters_mem_.unplug_all_fails++;
        return {kResponseError, 0};
      }
      // The one time the usable region may shrink: to what the host asks.
      usable_size_ = (requested_size_ + slot_size_ - 1) / slot_size_ * slot_size_;
      return {kResponseAck, 0};
    }
    case kRequestState: {
      Timed t(state_agg_);
      counters_mem_.state_count++;
      std::optional<Range> r = UsableRange(addr, nb_blocks);
      if (!r) {
        counters_mem_.state_fails++;
        return {kResponseError, 0};
      }
      uint64_t plugged = PluggedIn(*r);
      uint16_t state = plugged == 0           ? kStateUnplugged
                       : plugged == r->blocks ? kStatePlugged
                                              : kStateMixed;
      return {kResponseAck, state};
    }
    default:
      counters_.request_errors++;
      LOG_WARN_RATELIMITED("virtio-mem: unknown request type %u", type);
      return {kResponseError, 0};
  }
}

std::optional<MemDevice::Range> MemDevice::UsableRange(uint64_t addr, uint16_t nb_blocks) const {
  if (nb_blocks == 0 || addr < addr_ || (addr - addr_) % block_size_ != 0) return std::nullopt;
  uint64_t offset = addr - addr_;
  uint64_t len = uint64_t{nb_blocks} * block_size_;
  if (offset >= usable_size_ || len > usable_size_ - offset) return std::nullopt;
  return Range{offset / block_size_, nb_blocks};
}

uint64_t MemDevice::PluggedIn(const Range& r) const {
  uint64_t n = 0;
  for (uint64_t b = r.first_block; b < r.first_block + r.blocks; b++) n += plugged_[b];
  return n;
}

void MemDevice::Mark(uint64_t block, bool plug) {
  if (plugged_[block] == plug) return;
  plugged_[block] = plug;
  uint32_t& n = slot_blocks_[block / (slot_size_ / block_size_)];
  n = plug ? n + 1 : n - 1;
}

bool MemDevice::Update(const Range& r, bool plug) {
  if (plug) {
    // Slots first: the guest touches the blocks as soon as it has the ack.
    for (uint64_t b = r.first_block; b < r.first_block + r.blocks; b++) Mark(b, true);
    if (!SyncSlots(r)) {
      for (uint64_t b = r.first_block; b < r.first_block + r.blocks; b++) Mark(b, false);
      SyncSlots(r);
      return false;
    }
    plugged_size_ += r.blocks * block_size_;
    return true;
  }
  for (uint64_t b = r.first_block; b < r.first_block + r.blocks; b++) {
    if (!plugged_[b]) continue;
    // Its pages go back to the host; the slot may stay (another block of
    // it is plugged), and then the block reads as zero when plugged again.
    if (!mem_->Discard(addr_ + b * block_size_, block_size_)) {
      counters_mem_.unplug_discard_fails++;
      LOG_WARN_RATELIMITED("virtio-mem: could not give back an unplugged block's pages");
    }
    Mark(b, false);
    plugged_size_ -= block_size_;
  }
  // A slot KVM fails to let go of is only address space the host keeps
  // open: the blocks are unplugged all the same (their pages are back).
  SyncSlots(r);
  return true;
}

bool MemDevice::SyncSlots(const Range& r) {
  uint64_t per_slot = slot_size_ / block_size_;
  bool ok = true;
  for (uint64_t s = r.first_block / per_slot; s <= (r.first_block + r.blocks - 1) / per_slot;
       s++) {
    bool any = slot_blocks_[s] != 0;
    if (any == slot_plugged_[s]) continue;
    absl::Status st = hook_(s, any);
    if (!st.ok()) {
      LOG_WARN_RATELIMITED("virtio-mem: slot %d: %s", static_cast<int>(s),
                           std::string(st.message()).c_str());
      ok = false;
      continue;
    }
    slot_plugged_[s] = any;
  }
  return ok;
}

void MemDevice::AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const {
  VirtioDevice::AppendMetrics(out);
  const MemCounters& c = counters_mem_;
  out->insert(out->end(), {{"queue_event_fails", c.queue_event_fails},
                           {"queue_event_count", c.queue_event_count},
                           {"plug_count", c.plug_count},
                           {"plug_bytes", c.plug_bytes},
                           {"plug_fails", c.plug_fails},
                           {"unplug_count", c.unplug_count},
                           {"unplug_bytes", c.unplug_bytes},
                           {"unplug_fails", c.unplug_fails},
                           {"unplug_discard_fails", c.unplug_discard_fails},
                           {"unplug_all_count", c.unplug_all_count},
                           {"unplug_all_fails", c.unplug_all_fails},
                           {"state_count", c.state_count},
                           {"state_fails", c.state_fails}});
  plug_agg_.AppendSum("plug_agg", out);
  unplug_agg_.AppendSum("unplug_agg", out);
  unplug_all_agg_.AppendSum("unplug_all_agg", out);
  state_agg_.AppendSum("state_agg", out);
}

void MemDevice::AppendLevels(std::vector<std::pair<std::string, uint64_t>>* out) const {
  plug_agg_.AppendMinMax("plug_agg", out);
  unplug_agg_.AppendMinMax("unplug_agg", out);
  unplug_all_agg_.AppendMinMax("unplug_all_agg", out);
  state_agg_.AppendMinMax("state_agg", out);
  out->emplace_back("plugged_bytes", plugged_size_);
  out->emplace_back("requested_bytes", requested_size_);
}

}  // namespace ember::virtio::mem
