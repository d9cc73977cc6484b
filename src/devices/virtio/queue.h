// A split virtqueue (virtio 1.x, section 2.7) read and written from the
// device side. The guest owns these rings and may put anything in them:
// every index is reduced modulo the queue size, every guest address goes
// through GuestMemory's checked accessors, chains are capped at the queue
// size (so a loop ends), and indirect tables are bounded and never nested.
// A violation marks the queue broken; the device then reports
// DEVICE_NEEDS_RESET instead of touching anything further.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/vmm/guest_memory.h"

namespace ember::virtio {

inline constexpr uint16_t kDescFlagNext = 1;
inline constexpr uint16_t kDescFlagWrite = 2;
inline constexpr uint16_t kDescFlagIndirect = 4;
inline constexpr uint16_t kMaxQueueSize = 32768;

// One buffer of a chain, already checked to lie inside guest memory.
struct Descriptor {
  uint64_t addr;
  uint32_t len;
  bool device_writable;
};

// A request: the head index (to return in the used ring) and its buffers.
struct DescriptorChain {
  uint16_t head;
  std::vector<Descriptor> descriptors;
};

class Queue {
 public:
  explicit Queue(uint16_t max_size) : max_size_(max_size), size_(max_size) {}

  // Driver-side configuration through the transport, before `ready`.
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  void set_desc_table(uint64_t addr) { desc_table_ = addr; }
  void set_avail_ring(uint64_t addr) { avail_ring_ = addr; }
  void set_used_ring(uint64_t addr) { used_ring_ = addr; }
  uint64_t desc_table() const { return desc_table_; }
  uint64_t avail_ring() const { return avail_ring_; }
  uint64_t used_ring() const { return used_ring_; }
  bool ready() const { return ready_; }
  void set_ready(bool ready) { ready_ = ready; }
  void set_event_idx(bool enabled) { event_idx_ = enabled; }

  // Checks size (power of two, at most max_size) and the rings' alignment
  // and placement in `mem` (spec 2.7: 16, 2 and 4 bytes).
  absl::Status Validate(const GuestMemory& mem) const;

  // The next available chain, nullopt when the ring is empty, or an error
  // (and the queue is broken) when the guest wrote something invalid.
  absl::StatusOr<std::optional<DescriptorChain>> Pop(const GuestMemory& mem);
  // Puts a chain back, to be popped again (e.g. when the backend is busy).
  void Undo() { next_avail_--; }

  // Returns `head` to the driver with `len` bytes written.
  absl::Status AddUsed(const GuestMemory& mem, uint16_t head, uint32_t len);
  // Whether the driver asked to be interrupted for the used buffers added
  // since the last call (EVENT_IDX or the avail ring's NO_INTERRUPT flag).
  absl::StatusOr<bool> NeedsInterrupt(const GuestMemory& mem);

  // Everything the driver set up and how far both sides got (snapshots).
  struct State {
    uint16_t size;
    uint64_t desc_table, avail_ring, used_ring;
    bool ready, event_idx;
    uint16_t next_avail, next_used, signalled_used;
  };
  State SaveState() const {
    return {size_, desc_table_, avail_ring_, used_ring_, ready_,
            event_idx_, next_avail_, next_used_, signalled_used_};
  }
  // The size must fit this queue's maximum; Validate checks the rest.
  bool RestoreState(const State& s) {
    if (s.size == 0 || s.size > max_size_ || (s.size & (s.size - 1)) != 0) return false;
    size_ = s.size;
    desc_table_ = s.desc_table;
    avail_ring_ = s.avail_ring;
    used_ring_ = s.used_ring;
    ready_ = s.ready;
    event_idx_ = s.event_idx;
    next_avail_ = s.next_avail;
    next_used_ = s.next_used;
    signalled_used_ = s.signalled_used;
    broken_ = false;
    return true;
  }

  bool broken() const { return broken_; }
  const std::string& error() const { return error_; }
  void Reset();

 private:
  absl::Status Break(std::string message);
  absl::StatusOr<Descriptor> ReadDescriptor(const GuestMemory& mem, uint64_t table,
                                            uint32_t table_size, uint32_t index,
                                            uint16_t* flags, uint16_t* next) const;
  absl::Status ReadIndirect(const GuestMemory& mem, const Descriptor& table,
                            DescriptorChain* chain) const;

  const uint16_t max_size_;
  uint16_t size_;
  uint64_t desc_table_ = 0, avail_ring_ = 0, used_ring_ = 0;
  bool ready_ = false;
  bool event_idx_ = false;
  bool broken_ = false;
  std::string error_;
  uint16_t next_avail_ = 0;  // free-running, as the ring indices
  uint16_t next_used_ = 0;
  uint16_t signalled_used_ = 0;  // next_used_ when the driver was last told
};

}  // namespace ember::virtio
