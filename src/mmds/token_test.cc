#include "src/mmds/token.h"

#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <vector>

namespace ember::mmds {
namespace {

constexpr std::array<uint64_t, 7> kKeys = {1, 2, 3, 4, 5, 6, 7};

TEST(SipHashTest, ReferenceVectors) {
  // The SipHash paper's key 00..0f; the empty message and its 15-byte example.
  uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
  EXPECT_EQ(SipHash24(k0, k1, {}), 0x726fdb47dd0e0e31ULL);
  std::vector<uint8_t> msg(15);
  std::iota(msg.begin(), msg.end(), 0);
  EXPECT_EQ(SipHash24(k0, k1, msg), 0xa129ca6149be45e5ULL);
}

TEST(TokenTest, TtlBounds) {
  uint64_t now = 5000;
  TokenAuthority tokens(kKeys, [&] { return now; });
  for (uint32_t bad : {0u, 21601u, 0xffffffffu}) {
    absl::StatusOr<std::string> t = tokens.Generate(bad);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().message(),
              "Invalid time to live value provided for token: " + std::to_string(bad) +
                  ". Please provide a value between 1 and 21600.");
  }
  EXPECT_TRUE(tokens.Generate(1).ok());
  EXPECT_TRUE(tokens.Generate(21600).ok());
}

TEST(TokenTest, ValidUntilItsExpiry) {
  uint64_t now = 5000;
  TokenAuthority tokens(kKeys, [&] { return now; });
  std::string t = *tokens.Generate(1);
  EXPECT_EQ(t.size(), 44u);
  EXPECT_TRUE(tokens.IsValid(t));
  now += 999;
  EXPECT_TRUE(tokens.IsValid(t));
  now += 1;
  EXPECT_FALSE(tokens.IsValid(t));
  std::string long_lived = *tokens.Generate(21600);
  now += 21600 * 1000 - 1;
  EXPECT_TRUE(tokens.IsValid(long_lived));
  now += 1;
  EXPECT_FALSE(tokens.IsValid(long_lived));
}

TEST(TokenTest, RefusesWhatItDidNotMake) {
  uint64_t now = 0;
  TokenAuthority tokens(kKeys, [&] { return now; });
  std::string t = *tokens.Generate(60);
  std::set<std::string> seen;
  for (int i = 0; i < 100; i++) seen.insert(*tokens.Generate(60));
  EXPECT_EQ(seen.size(), 100u);  // never the same twice

  EXPECT_FALSE(tokens.IsValid(""));
  EXPECT_FALSE(tokens.IsValid("INVALID_TOKEN"));
  EXPECT_FALSE(tokens.IsValid(t + "A"));
  EXPECT_FALSE(tokens.IsValid(t.substr(0, 43)));
  EXPECT_FALSE(tokens.IsValid(std::string(71, 'A')));
  for (size_t i = 0; i < t.size() - 1; i++) {
    std::string bad = t;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(tokens.IsValid(bad)) << i;
  }
  // Another authority (a restored snapshot) refuses it.
  std::array<uint64_t, 7> other = kKeys;
  other[2] ^= 1;
  EXPECT_FALSE(TokenAuthority(other, [&] { return now; }).IsValid(t));
  // Keys from getrandom.
  absl::StatusOr<TokenAuthority> fresh = TokenAuthority::Create([&] { return now; });
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->IsValid(t));
  EXPECT_TRUE(fresh->IsValid(*fresh->Generate(1)));
}

}  // namespace
}  // namespace ember::mmds
