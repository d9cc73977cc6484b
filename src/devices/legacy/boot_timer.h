// Firecracker's boot timer (ember --boot-timer): the guest's init writes
// the byte 123 at offset 0 of this MMIO page when it has booted, and the
// VMM logs how long that took since InstanceStart. Needs a guest that can
// run user space (hardware KVM, not PVM).
#pragma once

#include <atomic>
#include <cstdint>

#include "src/vstate/bus.h"

namespace ember {

class BootTimer : public BusDevice {
 public:
  static constexpr uint64_t kBase = 0xd0000000;
  static constexpr uint64_t kSize = 0x1000;
  static constexpr uint8_t kMagicBootComplete = 123;

  // When the VM started (monotonic ms), set by Vm::Run.
  void Start(double monotonic_ms) { start_ms_ = monotonic_ms; }
  // The boot time the guest reported, or a negative number.
  double boot_ms() const { return boot_ms_; }

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::atomic<double> start_ms_ = 0;
  std::atomic<double> boot_ms_ = -1;
};

}  // namespace ember
