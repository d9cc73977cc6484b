// MMDS V2 session tokens (Firecracker's mmds/token.rs): the guest asks for
// one with PUT /latest/api/token and a time to live of 1 to 21600 seconds,
// and shows it on every GET. A token is stateless: it carries its expiry,
// hidden and authenticated under keys drawn from getrandom(2) when the
// authority is made, so any number of tokens costs no memory, and a new
// authority (a restored snapshot) invalidates every earlier token.
//
// Firecracker seals the expiry with AES-256-GCM; Ember has no AES at hand
// and uses SipHash-2-4 (a keyed PRF) instead: the expiry is XORed with
// SipHash(k_enc, nonce) and the whole is tagged with two SipHash outputs
// under independent keys (128 bits). Tokens are 44 base64 characters.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "src/mmds/clock.h"

namespace ember::mmds {

inline constexpr uint32_t kMinTokenTtlSeconds = 1;
inline constexpr uint32_t kMaxTokenTtlSeconds = 21600;
// Longer strings are refused before decoding (Firecracker's limit).
inline constexpr size_t kTokenLengthLimit = 70;

// SipHash-2-4 of `data` under a 128-bit key (k0, k1 little-endian halves).
uint64_t SipHash24(uint64_t k0, uint64_t k1, std::span<const uint8_t> data);

class TokenAuthority {
 public:
  // Draws the keys from getrandom(2).
  static absl::StatusOr<TokenAuthority> Create(Clock clock);
  // Keys given, for tests and the fuzzer.
  TokenAuthority(const std::array<uint64_t, 7>& key_material, Clock clock);

  // A token valid for `ttl_seconds`; InvalidArgument with Firecracker's
  // message when the TTL is out of bounds.
  absl::StatusOr<std::string> Generate(uint32_t ttl_seconds);
  // True for a token this authority made that has not expired.
  bool IsValid(std::string_view token) const;

 private:
  uint64_t enc_k0_, enc_k1_, mac_k0_, mac_k1_, mac2_k0_, mac2_k1_;
  uint64_t next_nonce_;
  Clock clock_;
};

}  // namespace ember::mmds
