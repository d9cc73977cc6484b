#include "src/vmm/snapshot/state_file.h"

#include "gtest/gtest.h"

namespace ember::snapshot {
namespace {

struct Pod {
  uint64_t a;
  uint32_t b;
};

std::vector<uint8_t> Sample() {
  StateWriter w;
  w.Put(Pod{1, 2});
  w.PutVector(std::vector<uint32_t>{7, 8, 9});
  w.PutString("machine");
  return w.Finish();
}

TEST(StateFile, RoundTrip) {
  std::vector<uint8_t> file = Sample();
  absl::StatusOr<StateReader> r = StateReader::Open(file);
  ASSERT_TRUE(r.ok()) << r.status();
  Pod pod;
  std::vector<uint32_t> v;
  std::string s;
  ASSERT_TRUE(r->Get(&pod) && r->GetVector(&v, 10) && r->GetString(&s, 100));
  EXPECT_EQ(pod.a, 1u);
  EXPECT_EQ(pod.b, 2u);
  EXPECT_EQ(v, (std::vector<uint32_t>{7, 8, 9}));
  EXPECT_EQ(s, "machine");
  EXPECT_TRUE(r->Finish().ok());
}

TEST(StateFile, KnownCrc) {
  const std::string text = "123456789";
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(text.data()), text.size()}), 0xcbf43926u);
}

TEST(StateFile, EveryTruncationAndEveryFlippedByteIsRefused) {
  std::vector<uint8_t> file = Sample();
  for (size_t n = 0; n < file.size(); n++) {
    EXPECT_FALSE(StateReader::Open(std::span(file.data(), n)).ok()) << n;
  }
  for (size_t i = 0; i < file.size(); i++) {
    std::vector<uint8_t> bad = file;
    bad[i] ^= 0x40;
    EXPECT_FALSE(StateReader::Open(bad).ok()) << "byte " << i;
  }
  std::vector<uint8_t> longer = file;
  longer.push_back(0);
  EXPECT_NE(StateReader::Open(longer).status().message().find("truncated or extended"),
            std::string::npos);
}

TEST(StateFile, WrongVersionIsNamed) {
  std::vector<uint8_t> file = Sample();
  file[8] = 9;
  EXPECT_NE(StateReader::Open(file).status().message().find("version 9"), std::string::npos);
}

TEST(StateFile, MalformedPayloadFails) {
  StateWriter w;
  w.Put(uint32_t{1000000});  // a vector count beyond what follows
  std::vector<uint8_t> file = w.Finish();
  absl::StatusOr<StateReader> r = StateReader::Open(file);
  ASSERT_TRUE(r.ok());
  std::vector<uint64_t> v;
  EXPECT_FALSE(r->GetVector(&v, 2000000));
  EXPECT_FALSE(r->Finish().ok());

  absl::StatusOr<StateReader> r2 = StateReader::Open(Sample());
  Pod pod;
  ASSERT_TRUE(r2->Get(&pod));
  EXPECT_NE(r2->Finish().message().find("left over"), std::string::npos);
  std::vector<uint32_t> v2;
  EXPECT_FALSE(r2->GetVector(&v2, 2)) << "more elements than allowed";
}

}  // namespace
}  // namespace ember::snapshot
