#include "src/devices/virtio/queue.h"

#include <atomic>

#include "absl/strings/str_format.h"
#include "src/common/status_macros.h"

namespace ember::virtio {
namespace {

// Ring layouts (virtio 1.x, 2.7.5 to 2.7.8).
constexpr uint64_t kDescSize = 16;
constexpr uint64_t kRingHeader = 4;  // flags, idx
constexpr uint64_t kAvailEntry = 2;
constexpr uint64_t kUsedEntry = 8;
constexpr uint16_t kAvailNoInterrupt = 1;

struct RawDescriptor {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(RawDescriptor) == kDescSize);

}  // namespace

absl::Status Queue::Break(std::string message) {
  if (!broken_) {
    broken_ = true;
    error_ = message;
  }
  return absl::DataLossError(std::move(message));
}

void Queue::Reset() {
  st_ = State{};
  st_.size = max_size_;
  broken_ = false;
  error_.clear();
}

absl::Status Queue::Validate(const GuestMemory& mem) const {
  if (st_.size == 0 || (st_.size & (st_.size - 1)) != 0 || st_.size > max_size_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %d is not a power of two up to %d", st_.size, max_size_));
  }
  if (st_.desc_table % 16 || st_.avail_ring % 2 || st_.used_ring % 4) {
    return absl::InvalidArgumentError("queue rings are misaligned (16, 2 and 4 bytes)");
  }
  // EVENT_IDX adds a u16 after each ring; check room for it either way.
  if (!mem.Contains(st_.desc_table, kDescSize * st_.size) ||
      !mem.Contains(st_.avail_ring, kRingHeader + kAvailEntry * st_.size + 2) ||
      !mem.Contains(st_.used_ring, kRingHeader + kUsedEntry * st_.size + 2)) {
    return absl::InvalidArgumentError("queue rings lie outside guest memory");
  }
  return absl::OkStatus();
}

absl::StatusOr<Descriptor> Queue::ReadDescriptor(const GuestMemory& mem, uint64_t table,
                                                 uint32_t table_size, uint32_t index,
                                                 uint16_t* flags, uint16_t* next) const {
  if (index >= table_size) {
    return absl::DataLossError(
        absl::StrFormat("descriptor index %d is beyond the table of %d", index, table_size));
  }
  ASSIGN_OR_RETURN(RawDescriptor raw, mem.ReadObj<RawDescriptor>(table + index * kDescSize));
  if (!mem.Contains(raw.addr, raw.len)) {
    return absl::DataLossError(absl::StrFormat(
        "descriptor %d buffer [%#x, +%#x) is outside guest memory", index, raw.addr, raw.len));
  }
  *flags = raw.flags;
  *next = raw.next;
  return Descriptor{raw.addr, raw.len, (raw.flags & kDescFlagWrite) != 0};
}

absl::Status Queue::ReadIndirect(const GuestMemory& mem, const Descriptor& table,
                                 DescriptorChain* chain) const {
  if (table.len == 0 || table.len % kDescSize || table.len / kDescSize > kMaxQueueSize) {
    return absl::DataLossError(
        absl::StrFormat("indirect table of %d bytes is not 1 to %d descriptors", table.len,
                        kMaxQueueSize));
  }
  const uint32_t count = table.len / kDescSize;
  uint32_t index = 0;
  // Each entry may be visited once; more means the table loops.
  for (uint32_t steps = 0;; steps++) {
    if (steps >= count) return absl::DataLossError("indirect descriptor chain loops");
    uint16_t flags, next;
    ASSIGN_OR_RETURN(Descriptor d, ReadDescriptor(mem, table.addr, count, index, &flags, &next));
    if (flags & kDescFlagIndirect) {
      return absl::DataLossError("indirect descriptor inside an indirect table");
    }
    chain->descriptors.push_back(d);
    if (!(flags & kDescFlagNext)) return absl::OkStatus();
    index = next;
  }
}

absl::StatusOr<std::optional<DescriptorChain>> Queue::Pop(const GuestMemory& mem) {
  if (broken_) return absl::DataLossError(error_);
  ASSIGN_OR_RETURN(uint16_t avail_idx, AvailIdx(mem));
  uint16_t pending = static_cast<uint16_t>(avail_idx - st_.next_avail);
  if (pending == 0 && st_.event_idx) {
    // Look again once our last avail_event store is visible: the driver
    // publishes, fences and reads avail_event, and without this fence both
    // sides can read the other's old value, leaving a buffer no one kicks for.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ASSIGN_OR_RETURN(avail_idx, AvailIdx(mem));
    pending = static_cast<uint16_t>(avail_idx - st_.next_avail);
  }
  if (pending == 0) return std::optional<DescriptorChain>();
  if (pending > st_.size) {
    return Break(absl::StrFormat("avail index moved %d entries in a queue of %d", pending, st_.size));
  }
  // The ring entries the driver published before idx must be read after it.
  std::atomic_thread_fence(std::memory_order_acquire);
  uint64_t slot = st_.avail_ring + kRingHeader + kAvailEntry * (st_.next_avail % st_.size);
  ASSIGN_OR_RETURN(uint16_t head, mem.ReadObj<uint16_t>(slot));

  DescriptorChain chain{head, {}};
  uint32_t index = head;
  // A chain has at most `st_.size` descriptors (2.7.5.3.1); more means a loop.
  for (uint32_t steps = 0;; steps++) {
    if (steps >= st_.size) return Break("descriptor chain is longer than the queue (a loop?)");
    uint16_t flags, next;
    absl::StatusOr<Descriptor> d = ReadDescriptor(mem, st_.desc_table, st_.size, index, &flags, &next);
    if (!d.ok()) return Break(std::string(d.status().message()));
    if (flags & kDescFlagIndirect) {
      if ((flags & kDescFlagNext) || !chain.descriptors.empty()) {
        return Break("an indirect descriptor must be alone in its chain");
      }
      if (absl::Status st = ReadIndirect(mem, *d, &chain); !st.ok()) {
        return Break(std::string(st.message()));
      }
      break;
    }
    chain.descriptors.push_back(*d);
    if (!(flags & kDescFlagNext)) break;
    index = next;
  }
  st_.next_avail++;
  if (st_.event_idx) {
    // avail_event: notify us again once the driver adds past what we took.
    RETURN_IF_ERROR(
        mem.WriteObj<uint16_t>(st_.used_ring + kRingHeader + kUsedEntry * st_.size, st_.next_avail));
  }
  return std::optional<DescriptorChain>(std::move(chain));
}

absl::StatusOr<uint16_t> Queue::AvailIdx(const GuestMemory& mem) const {
  // avail ring: flags (u16), then idx (u16).
  return mem.ReadObj<uint16_t>(st_.avail_ring + 2);
}

absl::StatusOr<uint16_t> Queue::NotifyOnNextAvail(const GuestMemory& mem) {
  if (broken_) return absl::DataLossError(error_);
  ASSIGN_OR_RETURN(uint16_t avail_idx, AvailIdx(mem));
  if (st_.event_idx) {
    RETURN_IF_ERROR(
        mem.WriteObj<uint16_t>(st_.used_ring + kRingHeader + kUsedEntry * st_.size, avail_idx));
  }
  return avail_idx;
}

absl::Status Queue::AddUsed(const GuestMemory& mem, uint16_t head, uint32_t len) {
  if (broken_) return absl::DataLossError(error_);
  if (head >= st_.size) return Break(absl::StrFormat("used head %d is beyond the queue", head));
  uint64_t slot = st_.used_ring + kRingHeader + kUsedEntry * (st_.next_used % st_.size);
  RETURN_IF_ERROR(mem.WriteObj<uint32_t>(slot, head));
  RETURN_IF_ERROR(mem.WriteObj<uint32_t>(slot + 4, len));
  st_.next_used++;
  // The entry must be visible before the index that publishes it.
  std::atomic_thread_fence(std::memory_order_release);
  return mem.WriteObj<uint16_t>(st_.used_ring + 2, st_.next_used);
}

absl::StatusOr<bool> Queue::NeedsInterrupt(const GuestMemory& mem) {
  // Order the used index write before reading the driver's suppression.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t old_used = st_.signalled_used;
  uint16_t new_used = st_.next_used;
  if (old_used == new_used) return false;
  st_.signalled_used = new_used;
  if (!st_.event_idx) {
    ASSIGN_OR_RETURN(uint16_t flags, mem.ReadObj<uint16_t>(st_.avail_ring));
    return (flags & kAvailNoInterrupt) == 0;
  }
  ASSIGN_OR_RETURN(uint16_t used_event,
                   mem.ReadObj<uint16_t>(st_.avail_ring + kRingHeader + kAvailEntry * st_.size));
  // vring_need_event (2.7.7.2): did the used index pass used_event?
  return static_cast<uint16_t>(new_used - used_event - 1) <
         static_cast<uint16_t>(new_used - old_used);
}

void Queue::State::Encode(ByteWriter& w) const {
  w.U16(size);
  w.U64(desc_table);
  w.U64(avail_ring);
  w.U64(used_ring);
  w.Bool(ready);
  w.Bool(event_idx);
  w.U16(next_avail);
  w.U16(next_used);
  w.U16(signalled_used);
}

bool Queue::State::Decode(ByteReader& r) {
  if (!r.U16(&size) || !r.U64(&desc_table) || !r.U64(&avail_ring) || !r.U64(&used_ring) ||
      !r.Bool(&ready) || !r.Bool(&event_idx) || !r.U16(&next_avail) || !r.U16(&next_used) ||
      !r.U16(&signalled_used)) {
    return false;
  }
  return true;
}

}  // namespace ember::virtio
