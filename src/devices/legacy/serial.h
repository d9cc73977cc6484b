// An 8250/16550 UART as the guest's console on COM1. Output goes to a host
// fd; input arrives from the VMM thread. Interrupts leave through a trigger
// (an irqfd in the VMM), raised on each new interrupt condition.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "src/common/byte_codec.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/rate_limiter.h"
#include "src/vstate/bus.h"

namespace ember {

// Firecracker's uart metrics, and Ember's dropped_input.
struct SerialCounters {
  uint64_t read_count = 0;          // bytes the guest read from the receive register
  uint64_t write_count = 0;         // bytes the guest wrote to the transmit register
  uint64_t missed_read_count = 0;   // reads of a size or register the UART lacks
  uint64_t missed_write_count = 0;  // such writes, and output bytes the host fd refused
  uint64_t flush_count = 0;         // writes of buffered output to the host fd
  uint64_t error_count = 0;         // those writes that failed
  uint64_t dropped_input = 0;       // input bytes beyond kMaxInput
  uint64_t rate_limiter_dropped_bytes = 0;  // output the rate limiter refused
};

class Serial : public BusDevice {
 public:
  static constexpr uint64_t kCom1Base = 0x3f8;
  static constexpr uint64_t kRegisterCount = 8;
  static constexpr uint32_t kCom1Irq = 4;
  // Input beyond this many unread bytes is dropped (and counted).
  static constexpr size_t kMaxInput = 4096;

  // `out_fd` receives the guest's output (-1 discards it); `interrupt`
  // raises the UART's IRQ line.
  Serial(int out_fd, std::function<void()> interrupt);
  ~Serial() override;
  // From now on each write of output to the host fd takes its bytes from
  // this bucket, or is dropped whole and counted, as Firecracker's is: a
  // guest that floods its console costs the host a bounded rate.
  void LimitOutput(const TokenBucketConfig& bucket);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Queues bytes for the guest to read; returns how many were accepted.
  // The registers a guest driver set up, for snapshots. Pending input is
  // not part of it: a restored guest starts with an empty receive FIFO.
  struct State {
    // Zeroed: a default State encodes as a valid one.
    uint8_t ier = 0, lcr = 0, mcr = 0, scr = 0, dll = 0, dlm = 0;
    bool thr_interrupt = false;

    // The snapshot encoding, field by field; bump kVersion when it changes.
    static constexpr uint16_t kVersion = 1;
    void Encode(ByteWriter& w) const;
    // False (and `r` says why) on a short or malformed input.
    bool Decode(ByteReader& r);
    friend bool operator==(const State&, const State&) = default;
  };
  State SaveState() const;
  void RestoreState(const State& state);

  size_t EnqueueInput(std::span<const uint8_t> bytes);
  // Writes any buffered output to the host fd.
  void Flush();
  uint64_t dropped_input() const;
  SerialCounters counters() const;

 private:
  uint8_t ReadRegister(uint64_t reg);
  void WriteRegister(uint64_t reg, uint8_t value);
  void Output(uint8_t byte);
  // Writes `bytes` to the host fd, counting the write and what it lost.
  void WriteOut(const std::string& bytes);
  uint8_t InterruptId() const;
  // Raises the IRQ if an enabled condition is pending.
  void UpdateInterrupt();

  mutable std::mutex mu_;
  const int out_fd_;
  const bool out_is_tty_;
  const bool out_is_socket_;
  std::function<void()> interrupt_;
  std::string out_buffer_;
  std::optional<virtio::TokenBucket> out_limit_;
  std::deque<uint8_t> in_;
  SerialCounters counters_;
  // The registers (and the pending transmitter-empty interrupt), kept as
  // the snapshot's State so that saving and restoring them is a copy.
  State regs_ = {0, 0, 0, 0, 0x0c, 0, false};
};

}  // namespace ember
