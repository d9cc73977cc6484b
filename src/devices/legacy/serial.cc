#include "src/devices/legacy/serial.h"

#include <unistd.h>

#include <cerrno>

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
      interrupt_(std::move(interrupt)) {}

Serial::~Serial() { Flush(); }

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  if (data.size() != 1 || offset >= kRegisterCount) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  std::lock_guard lock(mu_);
  data[0] = ReadRegister(offset);
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.size() != 1 || offset >= kRegisterCount) return;
  std::lock_guard lock(mu_);
  WriteRegister(offset, data[0]);
}

uint8_t Serial::InterruptId() const {
  if ((ier_ & kIerRxData) && !in_.empty()) return kIirRxData;
  if ((ier_ & kIerThrEmpty) && thr_interrupt_) return kIirThrEmpty;
  return kIirNone;
}

Serial::State Serial::SaveState() const {
  std::lock_guard lock(mu_);
  return {ier_, lcr_, mcr_, scr_, dll_, dlm_, thr_interrupt_};
}

void Serial::RestoreState(const State& s) {
  std::lock_guard lock(mu_);
  ier_ = s.ier;
  lcr_ = s.lcr;
  mcr_ = s.mcr;
  scr_ = s.scr;
  dll_ = s.dll;
  dlm_ = s.dlm;
  thr_interrupt_ = s.thr_interrupt;
  UpdateInterrupt();
}

void Serial::UpdateInterrupt() {
  if (InterruptId() != kIirNone && interrupt_) interrupt_();
}

uint8_t Serial::ReadRegister(uint64_t reg) {
  switch (reg) {
    case kData: {
      if (lcr_ & kLcrDlab) return dll_;
      if (in_.empty()) return 0;
      uint8_t byte = in_.front();
      in_.pop_front();
      UpdateInterrupt();
      return byte;
    }
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIir: {
      uint8_t id = InterruptId();
      // Reading IIR acknowledges a transmitter-empty interrupt.
      if (id == kIirThrEmpty) thr_interrupt_ = false;
      return id | kIirFifoEnabled;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrIdle | (in_.empty() ? 0 : kLsrDataReady);
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                    ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return kMsrDefault;
    case kScr:
      return scr_;
  }
  return 0xff;
}

void Serial::WriteRegister(uint64_t reg, uint8_t value) {
  switch (reg) {
    case kData:
      if (lcr_ & kLcrDlab) {
        dll_ = value;
        return;
      }
      if (mcr_ & kMcrLoop) {
        if (in_.size() < kMaxInput) in_.push_back(value);
      } else {
        Output(value);
      }
      // The byte leaves at once, so the holding register is empty again.
      thr_interrupt_ = true;
      UpdateInterrupt();
      return;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = value;
        return;
      }
      // Enabling the THR-empty interrupt while the THR is empty raises it,
      // as on real hardware; Linux starts transmitting on it.
      if ((value & kIerThrEmpty) && !(ier_ & kIerThrEmpty)) thr_interrupt_ = true;
      ier_ = value & kIerMask;
      UpdateInterrupt();
      return;
    case kIir:
      return;  // FCR: the FIFO is always on
    case kLcr:
      lcr_ = value;
      return;
    case kMcr:
      mcr_ = value;
      return;
    case kScr:
      scr_ = value;
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
    size_t done = 0;
    while (done < pending.size()) {
      ssize_t n = ::write(out_fd_, pending.data() + done, pending.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // output is best effort; the guest must not stall
      done += n;
    }
  }
}

void Serial::Flush() {
  std::lock_guard lock(mu_);
  if (out_buffer_.empty() || out_fd_ < 0) return;
  (void)!::write(out_fd_, out_buffer_.data(), out_buffer_.size());
  out_buffer_.clear();
}

size_t Serial::EnqueueInput(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  size_t room = kMaxInput - std::min(kMaxInput, in_.size());
  size_t take = std::min(room, bytes.size());
  in_.insert(in_.end(), bytes.begin(), bytes.begin() + take);
  dropped_input_ += bytes.size() - take;
  if (take > 0) UpdateInterrupt();
  return take;
}

uint64_t Serial::dropped_input() const {
  std::lock_guard lock(mu_);
  return dropped_input_;
}

}  // namespace ember
