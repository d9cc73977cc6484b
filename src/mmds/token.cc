#include "src/mmds/token.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace ember::mmds {
namespace {

// nonce (8) | expiry XOR keystream (8) | tag (16)
constexpr size_t kTokenBytes = 32;

uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

void SipRound(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
  v0 += v1; v1 = Rotl(v1, 13); v1 ^= v0; v0 = Rotl(v0, 32);
  v2 += v3; v3 = Rotl(v3, 16); v3 ^= v2;
  v0 += v3; v3 = Rotl(v3, 21); v3 ^= v0;
  v2 += v1; v1 = Rotl(v1, 17); v1 ^= v2; v2 = Rotl(v2, 32);
}

uint64_t LoadLe64(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

void StoreLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

uint64_t SipHash24(uint64_t k0, uint64_t k1, std::span<const uint8_t> data) {
  uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
  uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
  size_t full = data.size() / 8 * 8;
  for (size_t i = 0; i < full; i += 8) {
    uint64_t m = LoadLe64(data.data() + i, 8);
    v3 ^= m;
    SipRound(v0, v1, v2, v3);
    SipRound(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t last = (uint64_t{data.size()} << 56) | LoadLe64(data.data() + full, data.size() - full);
  v3 ^= last;
  SipRound(v0, v1, v2, v3);
  SipRound(v0, v1, v2, v3);
  v0 ^= last;
  v2 ^= 0xff;
  for (int i = 0; i < 4; i++) SipRound(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

absl::StatusOr<TokenAuthority> TokenAuthority::Create(Clock clock) {
  std::array<uint64_t, 7> keys;
  uint8_t* p = reinterpret_cast<uint8_t*>(keys.data());
  size_t got = 0;
  while (got < sizeof(keys)) {
    ssize_t n = getrandom(p + got, sizeof(keys) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(absl::StrFormat("getrandom for the MMDS token keys: %s",
                                                 strerror(errno)));
    }
    got += static_cast<size_t>(n);
  }
  return TokenAuthority(keys, std::move(clock));
}

TokenAuthority::TokenAuthority(const std::array<uint64_t, 7>& k, Clock clock)
    : enc_k0_(k[0]), enc_k1_(k[1]), mac_k0_(k[2]), mac_k1_(k[3]), mac2_k0_(k[4]),
      mac2_k1_(k[5]), next_nonce_(k[6]), clock_(std::move(clock)) {}

absl::StatusOr<std::string> TokenAuthority::Generate(uint32_t ttl_seconds) {
  if (ttl_seconds < kMinTokenTtlSeconds || ttl_seconds > kMaxTokenTtlSeconds) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Invalid time to live value provided for token: %u. Please provide a value between "
        "%u and %u.",
        ttl_seconds, kMinTokenTtlSeconds, kMaxTokenTtlSeconds));
  }
  uint64_t expiry = clock_() + uint64_t{ttl_seconds} * 1000;
  // A counter never repeats, so no two tokens share a keystream.
  uint64_t nonce = next_nonce_++;
  uint8_t bytes[kTokenBytes];
  StoreLe64(bytes, nonce);
  StoreLe64(bytes + 8, expiry ^ SipHash24(enc_k0_, enc_k1_, std::span(bytes, 8)));
  std::span<const uint8_t> sealed(bytes, 16);
  StoreLe64(bytes + 16, SipHash24(mac_k0_, mac_k1_, sealed));
  StoreLe64(bytes + 24, SipHash24(mac2_k0_, mac2_k1_, sealed));
  return absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(bytes), kTokenBytes));
}

bool TokenAuthority::IsValid(std::string_view token) const {
  if (token.size() > kTokenLengthLimit) return false;
  std::string raw;
  // Only the canonical encoding: decoding is lenient, so re-encode and compare.
  if (!absl::Base64Unescape(absl::string_view(token.data(), token.size()), &raw) ||
      raw.size() != kTokenBytes || absl::Base64Escape(raw) != token) {
    return false;
  }
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(raw.data());
  std::span<const uint8_t> sealed(bytes, 16);
  uint64_t diff = (LoadLe64(bytes + 16, 8) ^ SipHash24(mac_k0_, mac_k1_, sealed)) |
                  (LoadLe64(bytes + 24, 8) ^ SipHash24(mac2_k0_, mac2_k1_, sealed));
  if (diff != 0) return false;
  uint64_t expiry = LoadLe64(bytes + 8, 8) ^ SipHash24(enc_k0_, enc_k1_, std::span(bytes, 8));
  return expiry > clock_();
}

}  // namespace ember::mmds
