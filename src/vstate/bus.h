// Maps guest port-I/O or MMIO addresses to the device that owns them. Built
// before the vCPUs start and read-only afterwards, so vCPU threads look up
// devices without locks; devices guard their own state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>

#include "absl/status/status.h"

namespace ember {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // `offset` is relative to the device's base; `data` is 1 to 8 bytes.
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
 public:
  // Fails if [base, base + len) overlaps a device already on the bus.
  absl::Status Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len);
  // Return false when no device owns the address (the access is dropped).
  bool Read(uint64_t addr, std::span<uint8_t> data) const;
  bool Write(uint64_t addr, std::span<const uint8_t> data) const;

 private:
  struct Range {
    uint64_t len;
    std::shared_ptr<BusDevice> device;
  };
  // The device whose range holds [addr, addr + size), and the offset in it.
  BusDevice* Find(uint64_t addr, uint64_t size, uint64_t* offset) const;

  std::map<uint64_t, Range> ranges_;  // keyed by base
};

}  // namespace ember
