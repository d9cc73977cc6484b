#include "src/devices/legacy/serial.h"

#include <unistd.h>

#include <cerrno>

#include "src/common/no_wait_output.h"

namespace ember {
namespace {

// Register offsets (DLAB picks the divisor latch at 0 and 1).
enum : uint64_t { kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7 };

constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThrEmpty = 0x02;
constexpr uint8_t kIerMask = 0x0f;
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirFifoEnabled = 0xc0;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrIdle = 0x60;  // THR empty and transmitter empty
constexpr uint8_t kMcrLoop = 0x10;
// Modem status with the lines a console needs: DCD, DSR, CTS.
constexpr uint8_t kMsrDefault = 0xb0;
constexpr size_t kOutBufferMax = 1024;

}  // namespace

Serial::Serial(int out_fd, std::function<void()> interrupt)
    : out_fd_(out_fd), out_is_tty_(out_fd >= 0 && isatty(out_fd)),
      out_is_socket_(IsSocket(out_fd)),
      interrupt_(std::move(interrupt)) {}

Serial::~Serial() { Flush(); }

void Serial::LimitOutput(const TokenBucketConfig& bucket) {
  std::lock_guard lock(mu_);
  out_limit_.emplace(bucket, virtio::MonotonicNs());
}

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  if (data.size() != 1 || offset >= kRegisterCount) {
    counters_.missed_read_count++;
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  data[0] = ReadRegister(offset);
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (data.size() != 1 || offset >= kRegisterCount) {
    counters_.missed_write_count++;
    return;
  }
  WriteRegister(offset, data[0]);
}

uint8_t Serial::InterruptId() const {
  if ((regs_.ier & kIerRxData) && !in_.empty()) return kIirRxData;
  if ((regs_.ier & kIerThrEmpty) && regs_.thr_interrupt) return kIirThrEmpty;
  return kIirNone;
}

Serial::State Serial::SaveState() const {
  std::lock_guard lock(mu_);
  return regs_;
}

void Serial::RestoreState(const State& s) {
  std::lock_guard lock(mu_);
  regs_ = s;
  UpdateInterrupt();
}

void Serial::State::Encode(ByteWriter& w) const {
  for (uint8_t v : {ier, lcr, mcr, scr, dll, dlm}) w.U8(v);
  w.Bool(thr_interrupt);
}

bool Serial::State::Decode(ByteReader& r) {
  return r.U8(&ier) && r.U8(&lcr) && r.U8(&mcr) && r.U8(&scr) && r.U8(&dll) && r.U8(&dlm) &&
         r.Bool(&thr_interrupt);
}

void Serial::UpdateInterrupt() {
  if (InterruptId() != kIirNone && interrupt_) interrupt_();
}

uint8_t Serial::ReadRegister(uint64_t reg) {
  switch (reg) {
    case kData: {
      if (regs_.lcr & kLcrDlab) return regs_.dll;
      if (in_.empty()) return 0;
      uint8_t byte = in_.front();
      in_.pop_front();
      counters_.read_count++;
      UpdateInterrupt();
      return byte;
    }
    case kIer:
      return (regs_.lcr & kLcrDlab) ? regs_.dlm : regs_.ier;
    case kIir: {
      uint8_t id = InterruptId();
      // Reading IIR acknowledges a transmitter-empty interrupt.
      if (id == kIirThrEmpty) regs_.thr_interrupt = false;
      return id | kIirFifoEnabled;
    }
    case kLcr:
      return regs_.lcr;
    case kMcr:
      return regs_.mcr;
    case kLsr:
      return kLsrIdle | (in_.empty() ? 0 : kLsrDataReady);
    case kMsr:
      if (regs_.mcr & kMcrLoop) {
        // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        return static_cast<uint8_t>(((regs_.mcr & 0x01) << 5) | ((regs_.mcr & 0x02) << 3) |
                                    ((regs_.mcr & 0x04) << 4) | ((regs_.mcr & 0x08) << 4));
      }
      return kMsrDefault;
    case kScr:
      return regs_.scr;
  }
  return 0xff;
}

void Serial::WriteRegister(uint64_t reg, uint8_t value) {
  switch (reg) {
    case kData:
      if (regs_.lcr & kLcrDlab) {
        regs_.dll = value;
        return;
      }
      counters_.write_count++;
      if (regs_.mcr & kMcrLoop) {
        if (in_.size() < kMaxInput) in_.push_back(value);
      } else {
        Output(value);
      }
      // The byte leaves at once, so the holding register is empty again.
      regs_.thr_interrupt = true;
      UpdateInterrupt();
      return;
    case kIer:
      if (regs_.lcr & kLcrDlab) {
        regs_.dlm = value;
        return;
      }
      // Enabling the THR-empty interrupt while the THR is empty raises it,
      // as on real hardware; Linux starts transmitting on it.
      if ((value & kIerThrEmpty) && !(regs_.ier & kIerThrEmpty)) regs_.thr_interrupt = true;
      regs_.ier = value & kIerMask;
      UpdateInterrupt();
      return;
    case kIir:
      return;  // FCR: the FIFO is always on
    case kLcr:
      regs_.lcr = value;
      return;
    case kMcr:
      regs_.mcr = value;
      return;
    case kScr:
      regs_.scr = value;
      return;
    default:
      return;  // LSR and MSR are read-only
  }
}

void Serial::Output(uint8_t byte) {
  if (out_fd_ < 0) return;
  out_buffer_.push_back(static_cast<char>(byte));
  // A terminal sees each byte at once; files and pipes get whole lines,
  // which saves a write per byte while the kernel prints its boot log.
  if (out_is_tty_ || byte == '\n' || out_buffer_.size() >= kOutBufferMax) {
    std::string pending;
    pending.swap(out_buffer_);
    WriteOut(pending);
  }
}

void Serial::WriteOut(const std::string& bytes) {
  if (out_limit_ && out_limit_->Take(bytes.size(), virtio::MonotonicNs()) !=
                        virtio::TokenBucket::Result::kTaken) {
    counters_.rate_limiter_dropped_bytes += bytes.size();
    return;
  }
  counters_.flush_count++;
  size_t done = 0;
  while (done < bytes.size()) {
    // Never waits on a socket nobody reads (no_wait_output.h); main.cc
    // gives a pipe an opening of its own that does the same.
    ssize_t n = WriteNoWait(out_fd_, out_is_socket_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Output is best effort; the guest must not stall.
      counters_.error_count++;
      counters_.missed_write_count += bytes.size() - done;
      return;
    }
    done += n;
  }
}

void Serial::Flush() {
  std::lock_guard lock(mu_);
  if (out_buffer_.empty() || out_fd_ < 0) return;
  WriteOut(out_buffer_);
  out_buffer_.clear();
}

size_t Serial::EnqueueInput(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  size_t room = kMaxInput - std::min(kMaxInput, in_.size());
  size_t take = std::min(room, bytes.size());
  in_.insert(in_.end(), bytes.begin(), bytes.begin() + take);
  counters_.dropped_input += bytes.size() - take;
  if (take > 0) UpdateInterrupt();
  return take;
}

uint64_t Serial::dropped_input() const {
  std::lock_guard lock(mu_);
  return counters_.dropped_input;
}

SerialCounters Serial::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

}  // namespace ember
