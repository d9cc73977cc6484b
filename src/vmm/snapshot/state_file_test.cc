#include "src/vmm/snapshot/state_file.h"

#include "gtest/gtest.h"

namespace ember::snapshot {
namespace {

// A header around `payload` as any version of the writer lays it out.
std::vector<uint8_t> Frame(uint32_t version, const std::vector<uint8_t>& payload) {
  ByteWriter w;
  w.Raw(std::vector<uint8_t>{'E', 'M', 'B', 'E', 'R', 'S', 'N', 'P'});
  w.U32(version);
  w.U64(payload.size());
  w.U32(Crc32(payload));
  w.Raw(payload);
  return w.Take();
}

std::vector<uint8_t> Sample() {
  StateWriter w;
  w.AddSection(1, 3, std::vector<uint8_t>{7, 8, 9});
  w.AddSection(2, 1, {});
  w.AddSection(1, 3, std::vector<uint8_t>{5});
  return w.Finish();
}

TEST(StateFile, Crc32IsTheIsoHdlcOne) {
  auto crc = [](std::string_view s) {
    return Crc32({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  };
  EXPECT_EQ(crc(""), 0u);
  EXPECT_EQ(crc("123456789"), 0xcbf43926u);  // the standard check value
  EXPECT_EQ(crc("The quick brown fox jumps over the lazy dog"), 0x414fa339u);
  // Every length around the 8-byte steps agrees with the bitwise CRC.
  std::vector<uint8_t> bytes(40);
  for (size_t i = 0; i < bytes.size(); i++) bytes[i] = static_cast<uint8_t>(i * 37 + 11);
  for (size_t n = 0; n <= bytes.size(); n++) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
      c ^= bytes[i];
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    EXPECT_EQ(Crc32({bytes.data(), n}), c ^ 0xffffffffu) << n;
  }
}

TEST(StateFile, LayoutIsExplicit) {
  std::vector<uint8_t> payload = {1, 0, 3, 0, 3, 0, 0, 0, 7, 8, 9,  // id 1, version 3, 3 bytes
                                  2, 0, 1, 0, 0, 0, 0, 0,           // id 2, version 1, empty
                                  1, 0, 3, 0, 1, 0, 0, 0, 5};
  EXPECT_EQ(Sample(), Frame(kStateVersion, payload));
}

TEST(StateFile, SectionsComeBackInOrder) {
  std::vector<uint8_t> file = Sample();
  absl::StatusOr<StateReader> r = StateReader::Open(file);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<Section>& s = r->sections();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].id, 1);
  EXPECT_EQ(s[0].version, 3);
  EXPECT_EQ(std::vector<uint8_t>(s[0].body.begin(), s[0].body.end()),
            (std::vector<uint8_t>{7, 8, 9}));
  EXPECT_EQ(s[1].id, 2);
  EXPECT_EQ(s[1].version, 1);
  EXPECT_TRUE(s[1].body.empty());
  EXPECT_EQ(s[2].id, 1);
  EXPECT_EQ(std::vector<uint8_t>(s[2].body.begin(), s[2].body.end()), std::vector<uint8_t>{5});
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

TEST(StateFile, AVersion1FileIsRefusedNamingItsVersion) {
  // Version 1 copied whole structs into an unsectioned payload.
  std::vector<uint8_t> v1 = Frame(1, {4, 0, 0, 0, '{', '}', 0, 0});
  EXPECT_EQ(StateReader::Open(v1).status().message(),
            "snapshot state file: version 1; this Ember reads version 2");
  std::vector<uint8_t> file = Sample();
  file[8] = 9;
  EXPECT_NE(StateReader::Open(file).status().message().find("version 9"), std::string::npos);
}

TEST(StateFile, SectionsMustTileThePayload) {
  // Checksummed, but a section says it is longer than what follows.
  std::vector<uint8_t> over = Frame(kStateVersion, {1, 0, 1, 0, 9, 0, 0, 0, 1, 2});
  EXPECT_NE(StateReader::Open(over).status().message().find(
                "sections: truncated: 9 bytes wanted at byte 8, 2 left"),
            std::string::npos)
      << StateReader::Open(over).status();
  // A section header cut short.
  std::vector<uint8_t> cut = Frame(kStateVersion, {1, 0, 1, 0, 0, 0, 0, 0, 2, 0, 1});
  EXPECT_NE(StateReader::Open(cut).status().message().find("truncated"), std::string::npos);
  // No sections at all is a valid framing; the snapshot decoder wants some.
  absl::StatusOr<StateReader> empty = StateReader::Open(Frame(kStateVersion, {}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->sections().empty());
}

}  // namespace
}  // namespace ember::snapshot
