// Explicit encodings for persisted state (snapshots): fixed-width
// little-endian fields written one by one, never the in-memory bytes of a
// struct, whose padding, bools and field order are no file format.
//
// ByteWriter appends fields; ByteReader reads them back from bytes that
// may be hostile. Every read is bounds-checked; the first failure (a short
// input, a bool that is neither 0 nor 1, a length over its maximum, a blob
// of the wrong size) is remembered, later reads fail too, and Finish says
// what went wrong. Outputs of failed reads are left untouched.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ember {

class ByteWriter {
 public:
  void U8(uint8_t v) { bytes_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  // A u32 length, then the bytes.
  void Bytes(std::span<const uint8_t> v);
  void String(std::string_view v);
  // A fixed-size ABI struct (e.g. KVM's kvm_regs) as its bytes, after a
  // u32 of its size so that a reader built with another layout refuses it.
  // Only for structs whose layout an outside ABI fixes, never Ember's own.
  template <typename T>
  void Blob(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    BlobBytes(&v, sizeof(T));
  }
  // Bytes as they are, no length (framing done by the caller).
  void Raw(std::span<const uint8_t> v) { bytes_.insert(bytes_.end(), v.begin(), v.end()); }

  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  void Le(uint64_t v, int width);
  void BlobBytes(const void* p, size_t size);

  std::vector<uint8_t> bytes_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  // Each returns false, now and for every later read, once the input is
  // short or holds a value out of range.
  bool U8(uint8_t* v);
  bool U16(uint16_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool Bool(bool* v);
  // Refuse a length over `max`.
  bool Bytes(std::vector<uint8_t>* v, uint32_t max);
  bool String(std::string* v, uint32_t max);
  // A u32 element count, refused over `max` or when `min_each` bytes per
  // element cannot follow (so a hostile count never sizes an allocation).
  bool Count(uint32_t* n, uint32_t max, size_t min_each);
  // What ByteWriter::Blob wrote; refused unless its size is sizeof(T).
  template <typename T>
  bool Blob(T* v) {
    static_assert(std::is_trivially_copyable_v<T>);
    return BlobBytes(v, sizeof(T));
  }
  // The next `n` bytes as they are (a view into the input).
  bool Raw(size_t n, std::span<const uint8_t>* v);

  // Marks the input bad for a reason the caller found (a value out of the
  // range its field allows); returns false.
  bool Fail(std::string why);

  bool ok() const { return error_.empty(); }
  size_t position() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  // OK when every read succeeded and the input was read to its end;
  // otherwise InvalidArgument "<what>: <why>".
  absl::Status Finish(absl::string_view what) const;

 private:
  // The next `n` bytes, or nullptr (and the reader fails) when short.
  const uint8_t* Take(size_t n);
  bool Le(uint64_t* v, int width);
  bool BlobBytes(void* p, size_t size);

  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  std::string error_;  // empty while every read succeeded
};

}  // namespace ember
