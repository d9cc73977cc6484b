// The fuzzer's bytes read as a little program: numbers and byte strings
// taken from the front, zero (or empty) once the input runs out.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace ember::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return size_ - pos_; }
  size_t position() const { return pos_; }
  // The bytes [from, to) of this input as an input of their own.
  FuzzInput Range(size_t from, size_t to) const {
    to = std::min(to, size_);
    return FuzzInput(data_ + std::min(from, to), to - std::min(from, to));
  }

  uint8_t U8() { return Take<uint8_t>(); }
  uint16_t U16() { return Take<uint16_t>(); }
  uint32_t U32() { return Take<uint32_t>(); }
  uint64_t U64() { return Take<uint64_t>(); }
  bool Bool() { return U8() & 1; }

  // Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> Bytes(size_t n) {
    n = std::min(n, remaining());
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  std::span<const uint8_t> Rest() { return Bytes(remaining()); }

  // The rest split at NUL bytes, as a command line's arguments.
  std::vector<std::string> Args() {
    std::vector<std::string> args(1);
    for (uint8_t b : Rest()) {
      if (b == 0) args.emplace_back();
      else args.back().push_back(static_cast<char>(b));
    }
    return args;
  }

 private:
  template <typename T>
  T Take() {
    T v = 0;
    size_t n = std::min(sizeof(T), remaining());
    std::memcpy(&v, data_ + pos_, n);
    pos_ += n;
    return v;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A device's saved state as a snapshot file could bring it: up to
// `max_junk` bytes of garbage, or `saved` with a few bytes changed and
// sometimes cut short.
inline std::vector<uint8_t> GarbledState(FuzzInput& in, std::vector<uint8_t> saved,
                                         size_t max_junk) {
  if (in.U8() < 64 || saved.empty()) {
    std::span<const uint8_t> junk = in.Bytes(in.U8() % (max_junk + 1));
    return {junk.begin(), junk.end()};
  }
  for (int i = in.U8() % 4; i >= 0; i--) saved[in.U8() % saved.size()] = in.U8();
  if (in.U8() >= 240) saved.resize(in.U8() % saved.size());
  return saved;
}

// Stops the fuzzer with a message: a broken promise, not a crash the
// sanitizers would see by themselves.
[[noreturn]] inline void Fail(const char* what) {
  fprintf(stderr, "fuzz invariant broken: %s\n", what);
  __builtin_trap();
}

}  // namespace ember::fuzz
