#include "src/devices/legacy/i8042.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace ember {
namespace {

constexpr uint64_t kDataPort = 0;
constexpr uint64_t kCommandPort = 4;

// Status register bits.
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystem = 0x04;
constexpr uint8_t kStatusCommand = 0x08;
constexpr uint8_t kStatusUnlocked = 0x10;
constexpr uint8_t kStatusAuxData = 0x20;

// Controller configuration byte (CTR) bits.
constexpr uint8_t kCtrKeyboardIrq = 0x01;
constexpr uint8_t kCtrSystem = 0x04;
constexpr uint8_t kCtrKeyboardDisabled = 0x10;
constexpr uint8_t kCtrAuxDisabled = 0x20;
constexpr uint8_t kCtrTranslate = 0x40;

// Controller commands (port 0x64).
enum : uint8_t {
  kReadCtr = 0x20,
  kWriteCtr = 0x60,
  kAuxDisable = 0xa7,
  kAuxEnable = 0xa8,
  kAuxTest = 0xa9,
  kSelfTest = 0xaa,
  kKeyboardTest = 0xab,
  kKeyboardDisable = 0xad,
  kKeyboardEnable = 0xae,
  kWriteOutputPort = 0xd1,
  kWriteKeyboardBuffer = 0xd2,
  kWriteAuxBuffer = 0xd3,
  kWriteAux = 0xd4,
  kCpuReset = 0xfe,
};

// Keyboard replies.
constexpr uint8_t kAck = 0xfa;
constexpr uint8_t kSelfTestPassed = 0xaa;

}  // namespace

void I8042::Read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  std::lock_guard lock(mu_);
  if (data.size() != 1) {
    counters_.missed_read_count++;
    return;
  }
  if (offset == kCommandPort) {
    uint8_t status = kStatusUnlocked | ((ctr_ & kCtrSystem) ? kStatusSystem : 0) |
                     (last_was_command_ ? kStatusCommand : 0);
    if (!out_.empty()) status |= kStatusOutputFull | (out_.front().aux ? kStatusAuxData : 0);
    data[0] = status;
  } else if (offset == kDataPort) {
    if (!out_.empty()) {
      data[0] = out_.front().value;
      out_.pop_front();
      RaiseIfPending();  // the next byte, if any, interrupts again
    }
  } else {
    counters_.missed_read_count++;
    return;
  }
  counters_.read_count++;
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  bool reset = false;
  {
    std::lock_guard lock(mu_);
    if (data.size() != 1 || (offset != kCommandPort && offset != kDataPort)) {
      counters_.missed_write_count++;
      return;
    }
    if (offset == kCommandPort) {
      last_was_command_ = true;
      reset = data[0] == kCpuReset;
      if (!reset) Command(data[0]);
    } else {
      last_was_command_ = false;
      Data(data[0]);
    }
    if (reset) {
      counters_.reset_count++;
    } else {
      counters_.write_count++;
    }
  }
  if (reset && reset_) reset_();
}

void I8042::Command(uint8_t command) {
  switch (command) {
    case kReadCtr: Output({ctr_}); break;
    case kWriteCtr:
    case kWriteOutputPort:
    case kWriteKeyboardBuffer:
    case kWriteAuxBuffer:
    case kWriteAux: pending_command_ = command; break;
    case kAuxDisable: ctr_ |= kCtrAuxDisabled; break;
    case kAuxEnable: ctr_ &= ~kCtrAuxDisabled; break;
    case kAuxTest: Output({0x00}); break;
    case kSelfTest: Output({0x55}); break;
    case kKeyboardTest: Output({0x00}); break;
    case kKeyboardDisable: ctr_ |= kCtrKeyboardDisabled; break;
    case kKeyboardEnable: ctr_ &= ~kCtrKeyboardDisabled; break;
    default: break;  // unknown commands are ignored, as by many real chips
  }
}

void I8042::Data(uint8_t value) {
  uint8_t command = pending_command_;
  pending_command_ = 0;
  switch (command) {
    case kWriteCtr: ctr_ = value; RaiseIfPending(); return;
    case kWriteOutputPort: return;
    case kWriteKeyboardBuffer: Output({value}); return;
    case kWriteAuxBuffer: Output({value}, /*aux=*/true); return;  // AUX loopback
    case kWriteAux: return;  // no mouse answers
    default: KeyboardCommand(value); return;
  }
}

void I8042::KeyboardCommand(uint8_t value) {
  if (pending_keyboard_ != 0) {  // the parameter of LEDs, typematic or scancode set
    uint8_t command = pending_keyboard_;
    pending_keyboard_ = 0;
    if (command == 0xf0 && value == 0) {
      Output({kAck, 0x02});  // "which set?": set 2
    } else {
      Output({kAck});
    }
    return;
  }
  switch (value) {
    case 0xff: Output({kAck, kSelfTestPassed}); break;  // reset
    case 0xf2: Output({kAck, 0xab, 0x83}); break;       // identify: MF2 keyboard
    case 0xee: Output({0xee}); break;                    // echo
    case 0xed:                                           // LEDs
    case 0xf3:                                           // typematic rate
    case 0xf0:                                           // scancode set
      pending_keyboard_ = value;
      Output({kAck});
      break;
    default: Output({kAck}); break;  // enable, disable, defaults, ...
  }
}

void I8042::Output(std::initializer_list<uint8_t> bytes, bool aux) {
  if (out_.size() + bytes.size() > kOutputCapacity) {
    counters_.dropped_bytes += bytes.size();
    return;
  }
  bool was_empty = out_.empty();
  for (uint8_t b : bytes) out_.push_back({b, aux});
  if (was_empty) RaiseIfPending();
}

uint64_t I8042::dropped_bytes() {
  std::lock_guard lock(mu_);
  return counters_.dropped_bytes;
}

I8042Counters I8042::counters() {
  std::lock_guard lock(mu_);
  return counters_;
}

I8042::State I8042::SaveState() {
  std::lock_guard lock(mu_);
  State s = {ctr_, pending_command_, pending_keyboard_, last_was_command_, 0, {}, {}};
  for (const Byte& b : out_) {
    if (s.out_count == kMaxSaved) break;
    s.out_value[s.out_count] = b.value;
    s.out_aux[s.out_count++] = b.aux;
  }
  return s;
}

void I8042::RestoreState(const State& s) {
  std::lock_guard lock(mu_);
  ctr_ = s.ctr;
  pending_command_ = s.pending_command;
  pending_keyboard_ = s.pending_keyboard;
  last_was_command_ = s.last_was_command;
  out_.clear();
  for (uint8_t i = 0; i < s.out_count && i < kMaxSaved; i++) out_.push_back({s.out_value[i], s.out_aux[i]});
  RaiseIfPending();
}

void I8042::State::Encode(ByteWriter& w) const {
  w.U8(ctr);
  w.U8(pending_command);
  w.U8(pending_keyboard);
  w.Bool(last_was_command);
  w.U8(out_count);
  for (uint8_t i = 0; i < out_count && i < kMaxSaved; i++) {
    w.U8(out_value[i]);
    w.Bool(out_aux[i]);
  }
}

bool I8042::State::Decode(ByteReader& r) {
  if (!r.U8(&ctr) || !r.U8(&pending_command) || !r.U8(&pending_keyboard) ||
      !r.Bool(&last_was_command) || !r.U8(&out_count)) {
    return false;
  }
  if (out_count > kMaxSaved) {
    return r.Fail(
        absl::StrCat("i8042: ", int{out_count}, " saved output bytes, at most ", kMaxSaved));
  }
  std::fill(std::begin(out_value), std::end(out_value), 0);
  std::fill(std::begin(out_aux), std::end(out_aux), false);
  for (uint8_t i = 0; i < out_count; i++) {
    if (!r.U8(&out_value[i]) || !r.Bool(&out_aux[i])) return false;
  }
  return true;
}

void I8042::RaiseIfPending() {
  if (!out_.empty() && !out_.front().aux && (ctr_ & kCtrKeyboardIrq) && interrupt_) {
    interrupt_();
  }
}

bool I8042::SendCtrlAltDel() {
  std::lock_guard lock(mu_);
  if (!(ctr_ & kCtrKeyboardIrq) || (ctr_ & kCtrKeyboardDisabled)) return false;
  // Key presses: scan code set 1 when the controller translates (Linux's
  // default), set 2 otherwise.
  if (ctr_ & kCtrTranslate) {
    Output({0x1d, 0x38, 0xe0, 0x53});
  } else {
    Output({0x14, 0x11, 0xe0, 0x71});
  }
  return true;
}

}  // namespace ember
