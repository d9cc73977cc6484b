// Checks for a State's snapshot encoding (Encode/Decode with the byte
// codec), shared by the tests of every layer's State types.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "src/common/byte_codec.h"

namespace ember::testing {

// Distinct non-zero bytes in every byte of `v`, different for each `seed`
// (for the KVM structs a State carries as sized blobs).
template <typename T>
void Fill(T* v, uint8_t seed) {
  auto* p = reinterpret_cast<uint8_t*>(v);
  for (size_t i = 0; i < sizeof(T); i++) p[i] = static_cast<uint8_t>((seed * 31 + i) % 255 + 1);
}

template <typename T>
bool SameBytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <typename T>
std::vector<uint8_t> Encode(const T& s) {
  ByteWriter w;
  s.Encode(w);
  return w.Take();
}

// Decodes all of `bytes` into a State that starts out unlike any input.
template <typename T>
absl::Status Decode(std::span<const uint8_t> bytes, T* out) {
  ByteReader r(bytes);
  out->Decode(r);
  return r.Finish("state");
}

template <typename T>
void ExpectEveryTruncationRefused(const T& s) {
  std::vector<uint8_t> bytes = Encode(s);
  for (size_t n = 0; n < bytes.size(); n++) {
    T out{};
    ByteReader r(std::span(bytes.data(), n));
    EXPECT_FALSE(out.Decode(r)) << n;
    EXPECT_NE(r.Finish("state").message().find("truncated"), std::string::npos) << n;
  }
}

// Any byte anywhere: decoding succeeds or fails, and never crashes.
template <typename T>
void ExpectGarbledInputHandled(const T& s) {
  std::vector<uint8_t> bytes = Encode(s);
  for (size_t i = 0; i < bytes.size(); i++) {
    for (int v : {0, 1, 2, 0x7f, 0xff}) {
      std::vector<uint8_t> bad = bytes;
      bad[i] = static_cast<uint8_t>(v);
      T out{};
      (void)Decode(bad, &out);
    }
  }
}

}  // namespace ember::testing
