// The snapshot encodings of the legacy devices' State: field by field,
// round trips, and refusal of short or malformed input.
#include <gtest/gtest.h>

#include <vector>

#include "src/common/byte_codec.h"
#include "src/common/testing/state_testing.h"
#include "src/devices/legacy/i8042.h"
#include "src/devices/legacy/serial.h"

namespace ember {
namespace {

using testing::Decode;
using testing::Encode;
using testing::ExpectEveryTruncationRefused;
using testing::ExpectGarbledInputHandled;

Serial::State SampleSerial() { return {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, true}; }

TEST(SerialState, EncodesEachFieldInOrder) {
  EXPECT_EQ(Encode(SampleSerial()), (std::vector<uint8_t>{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 1}));
}

TEST(SerialState, RoundTrips) {
  Serial::State in = SampleSerial(), out = {};
  ASSERT_TRUE(Decode(Encode(in), &out).ok());
  EXPECT_EQ(out.ier, 0x11);
  EXPECT_EQ(out.lcr, 0x22);
  EXPECT_EQ(out.mcr, 0x33);
  EXPECT_EQ(out.scr, 0x44);
  EXPECT_EQ(out.dll, 0x55);
  EXPECT_EQ(out.dlm, 0x66);
  EXPECT_TRUE(out.thr_interrupt);
  EXPECT_EQ(out, in);
}

TEST(SerialState, MalformedInputIsRefused) {
  ExpectEveryTruncationRefused(SampleSerial());
  ExpectGarbledInputHandled(SampleSerial());
  std::vector<uint8_t> bytes = Encode(SampleSerial());
  bytes.back() = 2;
  Serial::State out = {};
  EXPECT_NE(Decode(bytes, &out).message().find("not a bool"), std::string::npos);
  bytes.back() = 1;
  bytes.push_back(0);
  EXPECT_NE(Decode(bytes, &out).message().find("left over"), std::string::npos);
}

TEST(SerialState, DeviceSavesWhatItRestores) {
  Serial serial(-1, nullptr);
  serial.RestoreState(SampleSerial());
  Serial::State out = {};
  ASSERT_TRUE(Decode(Encode(serial.SaveState()), &out).ok());
  EXPECT_EQ(out, SampleSerial());
}

I8042::State SampleI8042(uint8_t count) {
  I8042::State s = {0x47, 0xd4, 0xed, true, count, {}, {}};
  for (uint8_t i = 0; i < count; i++) {
    s.out_value[i] = static_cast<uint8_t>(0xa0 + i);
    s.out_aux[i] = i % 2 == 1;
  }
  return s;
}

TEST(I8042State, EncodesOnlyTheBytesInUse) {
  EXPECT_EQ(Encode(SampleI8042(2)),
            (std::vector<uint8_t>{0x47, 0xd4, 0xed, 1, 2, 0xa0, 0, 0xa1, 1}));
}

TEST(I8042State, RoundTrips) {
  for (int count : {0, 3, int{I8042::kMaxSaved}}) {
    I8042::State in = SampleI8042(static_cast<uint8_t>(count));
    I8042::State out;
    std::fill(std::begin(out.out_value), std::end(out.out_value), 0xee);
    std::fill(std::begin(out.out_aux), std::end(out.out_aux), true);
    ASSERT_TRUE(Decode(Encode(in), &out).ok());
    EXPECT_EQ(out.ctr, 0x47);
    EXPECT_EQ(out.pending_command, 0xd4);
    EXPECT_EQ(out.pending_keyboard, 0xed);
    EXPECT_TRUE(out.last_was_command);
    EXPECT_EQ(out.out_count, count);
    for (size_t i = 0; i < I8042::kMaxSaved; i++) {
      EXPECT_EQ(out.out_value[i], in.out_value[i]) << i;
      EXPECT_EQ(out.out_aux[i], in.out_aux[i]) << i;
    }
    EXPECT_EQ(out, in) << "the slots not in use come back zero";
  }
}

TEST(I8042State, MalformedInputIsRefused) {
  ExpectEveryTruncationRefused(SampleI8042(I8042::kMaxSaved));
  ExpectGarbledInputHandled(SampleI8042(I8042::kMaxSaved));
  std::vector<uint8_t> bytes = Encode(SampleI8042(I8042::kMaxSaved));
  bytes[4] = I8042::kMaxSaved + 1;
  bytes.insert(bytes.end(), {0x55, 0});
  I8042::State out = {};
  EXPECT_NE(Decode(bytes, &out).message().find("17 saved output bytes, at most 16"),
            std::string::npos);
  bytes = Encode(SampleI8042(1));
  bytes[3] = 2;  // last_was_command
  EXPECT_NE(Decode(bytes, &out).message().find("not a bool"), std::string::npos);
}

TEST(I8042State, DeviceSavesWhatItRestores) {
  I8042 i8042(nullptr, nullptr);
  i8042.RestoreState(SampleI8042(5));
  I8042::State out = {};
  ASSERT_TRUE(Decode(Encode(i8042.SaveState()), &out).ok());
  EXPECT_EQ(out, SampleI8042(5));
}

}  // namespace
}  // namespace ember
