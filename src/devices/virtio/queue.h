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
#include "src/common/byte_codec.h"
#include "src/vstate/guest_memory.h"

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
  explicit Queue(uint16_t max_size) : max_size_(max_size) { st_.size = max_size; }

  // Driver-side configuration through the transport, before `ready`.
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return st_.size; }
  void set_size(uint16_t size) { st_.size = size; }
  void set_desc_table(uint64_t addr) { st_.desc_table = addr; }
  void set_avail_ring(uint64_t addr) { st_.avail_ring = addr; }
  void set_used_ring(uint64_t addr) { st_.used_ring = addr; }
  uint64_t desc_table() const { return st_.desc_table; }
  uint64_t avail_ring() const { return st_.avail_ring; }
  uint64_t used_ring() const { return st_.used_ring; }
  bool ready() const { return st_.ready; }
  void set_ready(bool ready) { st_.ready = ready; }
  void set_event_idx(bool enabled) { st_.event_idx = enabled; }

  // Checks size (power of two, at most max_size) and the rings' alignment
  // and placement in `mem` (spec 2.7: 16, 2 and 4 bytes).
  absl::Status Validate(const GuestMemory& mem) const;

  // The next available chain, nullopt when the ring is empty, or an error
  // (and the queue is broken) when the guest wrote something invalid.
  absl::StatusOr<std::optional<DescriptorChain>> Pop(const GuestMemory& mem);
  // Puts a chain back, to be popped again (e.g. when the backend is busy).
  void Undo() { st_.next_avail--; }
  // The driver's avail index: how many chains it has made available.
  absl::StatusOr<uint16_t> AvailIdx(const GuestMemory& mem) const;
  // Asks the driver to notify the next time it makes a buffer available,
  // however many it has given already (EVENT_IDX's avail_event; without
  // EVENT_IDX it always notifies). Returns the driver's avail index.
  absl::StatusOr<uint16_t> NotifyOnNextAvail(const GuestMemory& mem);

  // Returns `head` to the driver with `len` bytes written.
  absl::Status AddUsed(const GuestMemory& mem, uint16_t head, uint32_t len);
  // Whether the driver asked to be interrupted for the used buffers added
  // since the last call (EVENT_IDX or the avail ring's NO_INTERRUPT flag).
  absl::StatusOr<bool> NeedsInterrupt(const GuestMemory& mem);

  // Everything the driver set up and how far both sides got (snapshots).
  struct State {
    uint16_t size = 0;
    uint64_t desc_table = 0, avail_ring = 0, used_ring = 0;
    bool ready = false, event_idx = false;
    uint16_t next_avail = 0, next_used = 0, signalled_used = 0;

    // Field by field, within MmioTransport::State's encoding (whose
    // version a change here bumps).
    void Encode(ByteWriter& w) const;
    // False (and `r` says why) on a short input; any size is read, and
    // Validate checks it against the queue when the device is activated.
    bool Decode(ByteReader& r);
    friend bool operator==(const State&, const State&) = default;
  };
  State SaveState() const { return st_; }
  // Any size: a driver may leave any value in QueueNum of a queue it never
  // enables, and a snapshot of that guest must load. Validate checks the
  // size when the device is activated, on restore too.
  void RestoreState(const State& s) {
    st_ = s;
    broken_ = false;
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
  // What the driver set up and both sides' progress, kept as the
  // snapshot's State: next_avail and next_used are free-running like the
  // ring indices; signalled_used is next_used when the driver was last told.
  State st_;
  bool broken_ = false;
  std::string error_;
};

}  // namespace ember::virtio
