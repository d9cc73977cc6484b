// libFuzzer target: the whole virtio-blk path (MMIO transport, queue,
// request parsing, real I/O on a memfd disk) driven by descriptors and
// guest memory that are the fuzzer's bytes.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "src/common/log.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"
#include "tests/fuzz/device_filter.h"

using namespace ember;
using namespace ember::virtio;
using ember::fuzz::OnDeviceThread;
using ember::fuzz::OnVcpu;

namespace {

constexpr uint64_t kMemSize = 1 << 20;
constexpr uint64_t kRings = 0x10000;
constexpr uint16_t kQueue = 16;

struct Harness {
  GuestMemory mem = *GuestMemory::Create({{0, kMemSize}});
  std::unique_ptr<MmioTransport> transport;
  std::unique_ptr<testing::MmioDriver> driver;

  Harness() {
    // Broken queues are the point here; their warnings are noise.
    SetLogLevel(LogLevel::kError);
    int disk = memfd_create("ember-fuzz-disk", 0);
    if (ftruncate(disk, 64 * 1024) != 0) __builtin_trap();
    DriveConfig config{"fuzz", "/proc/self/fd/" + std::to_string(disk)};
    auto dev = block::BlockDevice::Create(config);
    if (!dev.ok()) __builtin_trap();
    transport = std::make_unique<MmioTransport>(std::move(*dev), &mem,
                                                UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver = std::make_unique<testing::MmioDriver>(*transport, mem, kRings);
  }
};

// One input's requests, on the filtered device thread.
void Requests(Harness* h, const uint8_t* data, size_t size);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* h = new Harness();
  if (size < 2) return 0;
  // Under the filters of Ember's VMM and vCPU threads (device_filter.h).
  OnDeviceThread([&] { Requests(h, data, size); });
  return 0;
}

namespace {

void Requests(Harness* h, const uint8_t* data, size_t size) {
  // A fresh device and queue for every input.
  uint32_t status = 0;
  OnVcpu([&] { status = h->driver->Init(~0ull, kQueue); });
  if (!(status & kStatusDriverOk)) __builtin_trap();
  testing::DriverQueue& q = h->driver->queue(0);
  // The input is the descriptor table, then the rest of the low memory
  // where headers and buffers live; the first byte says how many heads
  // the driver publishes.
  uint8_t heads = data[0] % 8 + 1;
  data++;
  size--;
  size_t table = std::min<size_t>(size, 16 * kQueue);
  std::span<uint8_t> desc = *h->mem.Slice(q.desc_table(), 16 * kQueue);
  std::memset(desc.data(), 0, desc.size());
  std::memcpy(desc.data(), data, table);
  std::span<uint8_t> low = *h->mem.Slice(0, kRings);
  std::memset(low.data(), 0, low.size());
  std::memcpy(low.data(), data + table, std::min<size_t>(size - table, kRings));
  for (uint8_t i = 0; i < heads; i++) q.Publish(static_cast<uint16_t>(data[i % size] % (kQueue + 2)));
  h->driver->Kick(0);
  while (q.PopUsed()) {
  }
}

}  // namespace
