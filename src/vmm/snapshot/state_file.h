// The snapshot state file's framing and a bounds-checked reader and writer
// for its payload:
//   "EMBERSNP" | u32 version | u64 payload length | u32 CRC-32 of payload |
//   payload
// A file that is truncated, longer, of another version or whose checksum
// does not match is refused before any of it is used.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::snapshot {

inline constexpr uint32_t kStateVersion = 1;

uint32_t Crc32(std::span<const uint8_t> bytes);

class StateWriter {
 public:
  template <typename T>
  void Put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    auto* p = reinterpret_cast<const uint8_t*>(&value);
    payload_.insert(payload_.end(), p, p + sizeof(T));
  }
  template <typename T>
  void PutVector(const std::vector<T>& values) {
    Put(static_cast<uint32_t>(values.size()));
    for (const T& v : values) Put(v);
  }
  void PutString(const std::string& s);
  // The whole file: header and payload.
  std::vector<uint8_t> Finish() const;

 private:
  std::vector<uint8_t> payload_;
};

class StateReader {
 public:
  // Checks the framing of a whole file; the reader then walks its payload.
  static absl::StatusOr<StateReader> Open(std::span<const uint8_t> file);

  // Each Get fails (and keeps failing) once the payload runs out.
  template <typename T>
  bool Get(T* value) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!ok_ || payload_.size() - pos_ < sizeof(T)) return Fail();
    std::memcpy(value, payload_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  // Refuses more than `max` elements.
  template <typename T>
  bool GetVector(std::vector<T>* values, uint32_t max) {
    uint32_t n;
    if (!Get(&n) || n > max || (payload_.size() - pos_) / sizeof(T) < n) return Fail();
    values->resize(n);
    for (T& v : *values) Get(&v);
    return ok_;
  }
  bool GetString(std::string* s, uint32_t max);
  // OK when every Get succeeded and the payload was read to its end.
  absl::Status Finish() const;

 private:
  explicit StateReader(std::span<const uint8_t> payload) : payload_(payload) {}
  bool Fail() { return ok_ = false; }

  std::span<const uint8_t> payload_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace ember::snapshot
