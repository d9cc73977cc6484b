#include "src/devices/virtio/testing/driver_queue.h"

#include <cstdlib>

namespace ember::virtio::testing {
namespace {

template <typename T>
void Put(const GuestMemory& mem, uint64_t addr, T value) {
  if (!mem.WriteObj(addr, value).ok()) std::abort();  // a test bug, not a device one
}

template <typename T>
T Get(const GuestMemory& mem, uint64_t addr) {
  auto v = mem.ReadObj<T>(addr);
  if (!v.ok()) std::abort();
  return *v;
}

}  // namespace

DriverQueue::DriverQueue(const GuestMemory& mem, uint64_t base, uint16_t size)
    : mem_(mem),
      size_(size),
      desc_(base),
      avail_(base + 16ull * size),
      used_((avail_ + 6 + 2ull * size + 3) & ~3ull) {
  // Fresh rings: everything zero.
  for (uint64_t a = base; a < end(); a += 2) Put<uint16_t>(mem_, a, 0);
}

uint64_t DriverQueue::end() const { return used_ + 6 + 8ull * size_; }

void DriverQueue::Configure(Queue& queue, bool event_idx) const {
  queue.set_size(size_);
  queue.set_desc_table(desc_);
  queue.set_avail_ring(avail_);
  queue.set_used_ring(used_);
  queue.set_event_idx(event_idx);
  queue.set_ready(true);
}

void DriverQueue::WriteDescriptor(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags,
                                  uint16_t next) {
  uint64_t d = desc_ + 16ull * index;
  Put<uint64_t>(mem_, d, addr);
  Put<uint32_t>(mem_, d + 8, len);
  Put<uint16_t>(mem_, d + 12, flags);
  Put<uint16_t>(mem_, d + 14, next);
}

uint16_t DriverQueue::Add(const std::vector<Buffer>& buffers) {
  uint16_t head = next_desc_;
  for (size_t i = 0; i < buffers.size(); i++) {
    uint16_t index = next_desc_;
    next_desc_ = static_cast<uint16_t>((next_desc_ + 1) % size_);
    bool last = i + 1 == buffers.size();
    uint16_t flags = (buffers[i].writable ? kDescFlagWrite : 0) | (last ? 0 : kDescFlagNext);
    WriteDescriptor(index, buffers[i].addr, buffers[i].len, flags, last ? 0 : next_desc_);
  }
  Publish(head);
  return head;
}

void DriverQueue::Publish(uint16_t head) {
  Put<uint16_t>(mem_, avail_ + 4 + 2ull * (avail_idx_ % size_), head);
  SetAvailIdx(static_cast<uint16_t>(avail_idx_ + 1));
}

void DriverQueue::SetAvailIdx(uint16_t idx) {
  avail_idx_ = idx;
  Put<uint16_t>(mem_, avail_ + 2, idx);
}

void DriverQueue::SetAvailFlags(uint16_t flags) { Put<uint16_t>(mem_, avail_, flags); }

void DriverQueue::SetUsedEvent(uint16_t idx) { Put<uint16_t>(mem_, avail_ + 4 + 2ull * size_, idx); }

uint16_t DriverQueue::AvailEvent() const { return Get<uint16_t>(mem_, used_ + 4 + 8ull * size_); }

bool DriverQueue::KickNeeded(uint16_t old_idx) const {
  return static_cast<uint16_t>(avail_idx_ - AvailEvent() - 1) <
         static_cast<uint16_t>(avail_idx_ - old_idx);
}

std::optional<UsedElement> DriverQueue::PopUsed() {
  uint16_t used_idx = Get<uint16_t>(mem_, used_ + 2);
  if (used_idx == last_used_) return std::nullopt;
  uint64_t slot = used_ + 4 + 8ull * (last_used_ % size_);
  last_used_++;
  return UsedElement{Get<uint32_t>(mem_, slot), Get<uint32_t>(mem_, slot + 4)};
}

}  // namespace ember::virtio::testing
