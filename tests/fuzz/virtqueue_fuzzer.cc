// libFuzzer target: a split virtqueue whose rings and descriptors are the
// fuzzer's bytes. The queue may refuse anything, but must never hand out a
// buffer outside guest memory, loop, or crash (ASan and UBSan watch).
#include <cstdint>
#include <cstring>

#include "src/devices/virtio/queue.h"

using ember::GuestMemory;
using ember::virtio::Queue;

namespace {
constexpr uint64_t kMemSize = 64 * 1024;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static GuestMemory* mem = new GuestMemory(*GuestMemory::Create({{0, kMemSize}}));
  if (size < 8) return 0;
  // Header: queue size, EVENT_IDX, ring placement (anywhere, aligned or not).
  uint16_t qsize = static_cast<uint16_t>(1u << (data[0] % 9));
  bool event_idx = data[1] & 1;
  auto addr = [&](int i) { return uint64_t(data[2 + i * 2] | data[3 + i * 2] << 8); };
  std::span<uint8_t> all = *mem->Slice(0, kMemSize);
  std::memset(all.data(), 0, all.size());
  std::memcpy(all.data(), data + 8, std::min<size_t>(size - 8, kMemSize));

  Queue q(256);
  q.set_size(qsize);
  q.set_desc_table(addr(0));
  q.set_avail_ring(addr(1));
  q.set_used_ring(addr(2));
  q.set_event_idx(event_idx);
  if (!q.Validate(*mem).ok()) return 0;
  q.set_ready(true);
  for (int i = 0; i < 64; i++) {
    auto chain = q.Pop(*mem);
    if (!chain.ok() || !chain->has_value()) break;
    if ((*chain)->descriptors.size() > ember::virtio::kMaxQueueSize) __builtin_trap();
    for (const auto& d : (*chain)->descriptors) {
      if (!mem->Contains(d.addr, d.len)) __builtin_trap();
    }
    (void)q.AddUsed(*mem, (*chain)->head, static_cast<uint32_t>(i));
    (void)q.NeedsInterrupt(*mem);
  }
  return 0;
}
