// An i8042 keyboard controller with a keyboard behind it: enough of both
// for Linux's i8042 and atkbd drivers to find a keyboard, so that the VMM
// can press Ctrl-Alt-Del (SendCtrlAltDel), and the CPU reset command
// (0xfe on the command port) with which Linux reboots on `reboot=k`.
// There is no mouse: AUX commands only loop back, as Linux probes them.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>

#include "src/common/byte_codec.h"
#include "src/vstate/bus.h"

namespace ember {

// Firecracker's i8042 metrics, and Ember's dropped_bytes.
struct I8042Counters {
  uint64_t read_count = 0;          // bytes the guest read from the status or data port
  uint64_t write_count = 0;         // bytes the guest wrote, a reset excepted
  uint64_t missed_read_count = 0;   // reads of a size or port it lacks
  uint64_t missed_write_count = 0;  // writes of a size or port it lacks
  uint64_t reset_count = 0;         // CPU resets the guest asked for
  uint64_t error_count = 0;         // always 0: nothing fails here
  uint64_t dropped_bytes = 0;       // see dropped_bytes()
};

class I8042 : public BusDevice {
 public:
  static constexpr uint64_t kBase = 0x60;
  static constexpr uint64_t kSize = 5;  // 0x60 data .. 0x64 command/status
  static constexpr uint32_t kKeyboardIrq = 1;

  // `reset` runs (on a vCPU thread) when the guest asks for a CPU reset;
  // `interrupt` raises IRQ 1.
  I8042(std::function<void()> reset, std::function<void()> interrupt)
      : reset_(std::move(reset)), interrupt_(std::move(interrupt)) {}

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Bytes waiting on port 0x60 at most, as Firecracker's: a reply or key
  // sequence that does not fit is dropped whole and counted, so a guest
  // that sends commands and never reads cannot grow the VMM.
  static constexpr size_t kOutputCapacity = 16;
  // Bytes dropped so far because the output queue was full.
  uint64_t dropped_bytes();
  I8042Counters counters();

  // The controller and keyboard state, for snapshots: up to kMaxSaved
  // bytes still waiting on port 0x60.
  static constexpr size_t kMaxSaved = kOutputCapacity;
  struct State {
    // Zeroed: a default State encodes as a valid one.
    uint8_t ctr = 0, pending_command = 0, pending_keyboard = 0;
    bool last_was_command = false;
    uint8_t out_count = 0;
    uint8_t out_value[kMaxSaved] = {};
    bool out_aux[kMaxSaved] = {};

    // The snapshot encoding, field by field, with only the out_count bytes
    // in use; bump kVersion when it changes.
    static constexpr uint16_t kVersion = 1;
    void Encode(ByteWriter& w) const;
    // False (and `r` says why) on a short or malformed input, or more than
    // kMaxSaved bytes; the unused slots come back zero.
    bool Decode(ByteReader& r);
    friend bool operator==(const State&, const State&) = default;
  };
  State SaveState();
  void RestoreState(const State& state);

  // Presses Ctrl, Alt and Delete (any thread). Fails when the guest has not
  // enabled the keyboard's interrupt, as nothing would read the keys. Keys
  // that find the output queue full are dropped (dropped_bytes).
  bool SendCtrlAltDel();

 private:
  void Command(uint8_t command);
  void Data(uint8_t value);
  void KeyboardCommand(uint8_t command);
  // Queues bytes for the guest to read on port 0x60, all of them or, when
  // they do not fit in kOutputCapacity, none.
  void Output(std::initializer_list<uint8_t> bytes, bool aux = false);
  void RaiseIfPending();

  std::mutex mu_;
  std::function<void()> reset_;
  std::function<void()> interrupt_;
  struct Byte {
    uint8_t value;
    bool aux;
  };
  std::deque<Byte> out_;  // at most kOutputCapacity
  I8042Counters counters_;
  uint8_t ctr_ = 0x01 | 0x04 | 0x40;  // keyboard interrupt, system flag, translation
  uint8_t pending_command_ = 0;      // a controller command waiting for its data byte
  uint8_t pending_keyboard_ = 0;     // a keyboard command waiting for its parameter
  bool last_was_command_ = false;
};

}  // namespace ember
