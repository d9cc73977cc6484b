// The driver's side of one split virtqueue, written into guest memory from
// the host: what a guest's virtio driver would do, for tests, benchmarks
// and fuzzing without booting Linux. It can also write things no real
// driver would (loops, wild addresses) to test the device's defences.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "src/devices/virtio/queue.h"
#include "src/vstate/guest_memory.h"

namespace ember::virtio::testing {

struct Buffer {
  uint64_t addr;
  uint32_t len;
  bool writable;
};

struct UsedElement {
  uint32_t id;
  uint32_t len;
};

class DriverQueue {
 public:
  // Lays the rings out from `base` (16-byte aligned): descriptors, then the
  // avail ring, then the used ring at the next 4-byte boundary.
  DriverQueue(const GuestMemory& mem, uint64_t base, uint16_t size);

  uint16_t size() const { return size_; }
  uint64_t desc_table() const { return desc_; }
  uint64_t avail_ring() const { return avail_; }
  uint64_t used_ring() const { return used_; }
  uint16_t avail_idx() const { return avail_idx_; }
  // First byte after the rings: where a test can put its buffers.
  uint64_t end() const;

  // Points a device-side queue at these rings and marks it ready.
  void Configure(Queue& queue, bool event_idx = false) const;

  // Writes `buffers` as a chain at free descriptors and publishes it;
  // returns the head index.
  uint16_t Add(const std::vector<Buffer>& buffers);
  // Raw writes for hostile tests.
  void WriteDescriptor(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags,
                       uint16_t next);
  void Publish(uint16_t head);
  void SetAvailIdx(uint16_t idx);
  void SetAvailFlags(uint16_t flags);
  void SetUsedEvent(uint16_t idx);
  uint16_t AvailEvent() const;
  // Whether a driver using EVENT_IDX notifies after moving its avail index
  // from `old_idx` to where it is now (vring_need_event, 2.7.10).
  bool KickNeeded(uint16_t old_idx) const;

  // The next used element the device returned, if any.
  std::optional<UsedElement> PopUsed();

 private:
  const GuestMemory& mem_;
  const uint16_t size_;
  const uint64_t desc_, avail_, used_;
  uint16_t next_desc_ = 0;
  uint16_t avail_idx_ = 0;
  uint16_t last_used_ = 0;
};

}  // namespace ember::virtio::testing
