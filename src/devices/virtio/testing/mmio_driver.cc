#include "src/devices/virtio/testing/mmio_driver.h"

#include <unistd.h>

#include <cstring>

namespace ember::virtio::testing {

MmioDriver::MmioDriver(MmioTransport& transport, const GuestMemory& mem, uint64_t ring_base)
    : transport_(transport), mem_(mem), ring_base_(ring_base) {}

uint32_t MmioDriver::Read(uint64_t offset) {
  uint8_t b[4];
  transport_.Read(offset, b);
  uint32_t v;
  std::memcpy(&v, b, 4);
  return v;
}

void MmioDriver::Write(uint64_t offset, uint32_t value) {
  uint8_t b[4];
  std::memcpy(b, &value, 4);
  transport_.Write(offset, b);
}

uint32_t MmioDriver::Init(uint64_t features, uint16_t queue_size) {
  Write(0x70, 0);
  Write(0x70, kStatusAcknowledge);
  Write(0x70, kStatusAcknowledge | kStatusDriver);
  Write(0x14, 0);
  uint64_t offered = Read(0x10);
  Write(0x14, 1);
  offered |= uint64_t{Read(0x10)} << 32;
  uint64_t accepted = features & offered;
  Write(0x24, 0);
  Write(0x20, static_cast<uint32_t>(accepted));
  Write(0x24, 1);
  Write(0x20, static_cast<uint32_t>(accepted >> 32));
  uint32_t status = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk;
  Write(0x70, status);
  if (!(Read(0x70) & kStatusFeaturesOk)) return Read(0x70);
  queues_.clear();
  for (uint32_t i = 0; i < transport_.num_queues(); i++) {
    Write(0x30, i);
    uint16_t size = std::min<uint16_t>(queue_size, Read(0x34));
    auto q = std::make_unique<DriverQueue>(mem_, ring_base_ + i * 0x10000ull, size);
    Write(0x38, size);
    Write(0x80, static_cast<uint32_t>(q->desc_table()));
    Write(0x84, static_cast<uint32_t>(q->desc_table() >> 32));
    Write(0x90, static_cast<uint32_t>(q->avail_ring()));
    Write(0x94, static_cast<uint32_t>(q->avail_ring() >> 32));
    Write(0xa0, static_cast<uint32_t>(q->used_ring()));
    Write(0xa4, static_cast<uint32_t>(q->used_ring() >> 32));
    Write(0x44, 1);
    queues_.push_back(std::move(q));
  }
  Write(0x70, status | kStatusDriverOk);
  return Read(0x70);
}

bool MmioDriver::TakeInterrupt() {
  uint64_t count = 0;
  bool fired = ::read(transport_.irq_fd(), &count, sizeof(count)) == sizeof(count);
  if (fired) Write(0x64, Read(0x60));  // acknowledge, as the guest's handler does
  return fired;
}

}  // namespace ember::virtio::testing
