#include "src/common/byte_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ember {
namespace {

struct Abi {
  uint32_t a;
  uint64_t b;
};

std::vector<uint8_t> Sample() {
  ByteWriter w;
  w.U8(0x11);
  w.U16(0x2233);
  w.U32(0x44556677);
  w.U64(0x8899aabbccddeeffull);
  w.Bool(true);
  w.Bool(false);
  w.Bytes(std::vector<uint8_t>{1, 2, 3});
  w.String("ember");
  w.Blob(Abi{7, 9});
  return w.Take();
}

TEST(ByteCodec, FixedWidthLittleEndian) {
  ByteWriter w;
  w.U16(0x0102);
  w.U32(0x03040506);
  w.U64(0x0708090a0b0c0d0eull);
  w.Bool(true);
  w.String("hi");
  EXPECT_EQ(w.bytes(), (std::vector<uint8_t>{0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0e, 0x0d, 0x0c,
                                             0x0b, 0x0a, 0x09, 0x08, 0x07, 1, 2, 0, 0, 0, 'h',
                                             'i'}));
}

TEST(ByteCodec, RoundTrip) {
  std::vector<uint8_t> bytes = Sample();
  ByteReader r(bytes);
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  bool t, f;
  std::vector<uint8_t> v;
  std::string s;
  Abi abi;
  ASSERT_TRUE(r.U8(&u8) && r.U16(&u16) && r.U32(&u32) && r.U64(&u64) && r.Bool(&t) &&
              r.Bool(&f) && r.Bytes(&v, 3) && r.String(&s, 5) && r.Blob(&abi));
  EXPECT_EQ(u8, 0x11);
  EXPECT_EQ(u16, 0x2233);
  EXPECT_EQ(u32, 0x44556677u);
  EXPECT_EQ(u64, 0x8899aabbccddeeffull);
  EXPECT_TRUE(t);
  EXPECT_FALSE(f);
  EXPECT_EQ(v, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(s, "ember");
  EXPECT_EQ(abi.a, 7u);
  EXPECT_EQ(abi.b, 9u);
  EXPECT_TRUE(r.Finish("sample").ok());
}

// Reads Sample's fields; false on the first refusal.
bool ReadSample(ByteReader& r) {
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  bool b;
  std::vector<uint8_t> v;
  std::string s;
  Abi abi;
  return r.U8(&u8) && r.U16(&u16) && r.U32(&u32) && r.U64(&u64) && r.Bool(&b) && r.Bool(&b) &&
         r.Bytes(&v, 3) && r.String(&s, 5) && r.Blob(&abi);
}

TEST(ByteCodec, EveryTruncationFailsAndKeepsFailing) {
  std::vector<uint8_t> bytes = Sample();
  for (size_t n = 0; n < bytes.size(); n++) {
    ByteReader r(std::span(bytes.data(), n));
    EXPECT_FALSE(ReadSample(r)) << n;
    uint8_t x;
    EXPECT_FALSE(r.U8(&x));
    absl::Status st = r.Finish("sample");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("sample: truncated"), std::string::npos) << st;
  }
}

TEST(ByteCodec, FailedReadLeavesOutputAlone) {
  std::vector<uint8_t> bytes = {1, 2, 3};
  ByteReader r(bytes);
  uint32_t v = 42;
  EXPECT_FALSE(r.U32(&v));
  EXPECT_EQ(v, 42u);
  uint8_t b = 7;
  EXPECT_FALSE(r.U8(&b)) << "bytes remain, but the reader has failed";
  EXPECT_EQ(b, 7);
}

TEST(ByteCodec, BoolOtherThanZeroOrOneIsRefused) {
  std::vector<uint8_t> bytes = {0, 1, 2};
  ByteReader r(bytes);
  bool a, b, c = false;
  EXPECT_TRUE(r.Bool(&a) && r.Bool(&b));
  EXPECT_FALSE(r.Bool(&c));
  EXPECT_FALSE(c);
  EXPECT_NE(r.Finish("flags").message().find("byte 2 holds 2, not a bool"), std::string::npos);
}

TEST(ByteCodec, LengthsOverTheirMaximumAreRefused) {
  ByteWriter w;
  w.String("toolong");
  ByteReader r(w.bytes());
  std::string s = "unchanged";
  EXPECT_FALSE(r.String(&s, 6));
  EXPECT_EQ(s, "unchanged");
  EXPECT_NE(r.Finish("name").message().find("count 7 at byte 0 is over 6"), std::string::npos);

  ByteWriter huge;
  huge.U32(0xffffffff);  // a length far beyond the input
  ByteReader r2(huge.bytes());
  std::vector<uint8_t> v;
  EXPECT_FALSE(r2.Bytes(&v, 0xffffffff));
  EXPECT_TRUE(v.empty());
}

TEST(ByteCodec, CountMustFitTheRemainingInput) {
  ByteWriter w;
  w.U32(3);
  w.U64(1);
  w.U64(2);
  ByteReader r(w.bytes());
  uint32_t n;
  EXPECT_FALSE(r.Count(&n, 10, 8)) << "three 8-byte elements cannot follow in 16 bytes";
  ByteReader r2(w.bytes());
  EXPECT_TRUE(r2.Count(&n, 10, 5));
  EXPECT_EQ(n, 3u);
}

TEST(ByteCodec, BlobOfAnotherSizeIsRefused) {
  ByteWriter w;
  w.Blob(uint32_t{5});
  ByteReader r(w.bytes());
  uint64_t v = 0;
  EXPECT_FALSE(r.Blob(&v));
  EXPECT_NE(r.Finish("regs").message().find("a blob of 4 bytes at byte 0 where this build's is 8"),
            std::string::npos);
}

TEST(ByteCodec, LeftoverBytesAndCallerFailuresAreReported) {
  std::vector<uint8_t> bytes = {1, 2};
  ByteReader r(bytes);
  uint8_t x;
  ASSERT_TRUE(r.U8(&x));
  EXPECT_EQ(r.Finish("thing").message(), "thing: 1 bytes left over after the last field");
  EXPECT_FALSE(r.Fail("first reason"));
  EXPECT_FALSE(r.Fail("second reason"));
  EXPECT_EQ(r.Finish("thing").message(), "thing: first reason");
}

TEST(ByteCodec, RawViewsTheInput) {
  std::vector<uint8_t> bytes = {1, 2, 3, 4};
  ByteReader r(bytes);
  std::span<const uint8_t> s;
  ASSERT_TRUE(r.Raw(3, &s));
  EXPECT_EQ(s.data(), bytes.data());
  EXPECT_EQ(r.remaining(), 1u);
  EXPECT_FALSE(r.Raw(2, &s));
}

TEST(ByteCodec, RandomInputNeverCrashes) {
  uint32_t seed = 12345;
  for (int round = 0; round < 2000; round++) {
    std::vector<uint8_t> bytes(round % 64);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>((seed = seed * 1103515245 + 12345) >> 16);
    ByteReader r(bytes);
    ReadSample(r);
    (void)r.Finish("random");
  }
}

}  // namespace
}  // namespace ember
