// The part of an i8042 keyboard controller a microVM guest uses: the CPU
// reset command (0xfe to the command port), with which Linux reboots on
// `reboot=k`. Everything else reads as an idle controller.
#pragma once

#include <functional>

#include "src/vmm/bus.h"

namespace ember {

class I8042 : public BusDevice {
 public:
  static constexpr uint64_t kBase = 0x60;
  static constexpr uint64_t kSize = 5;  // 0x60 data .. 0x64 command/status

  // `reset` runs (on a vCPU thread) when the guest asks for a reset.
  explicit I8042(std::function<void()> reset) : reset_(std::move(reset)) {}

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::function<void()> reset_;
};

}  // namespace ember
