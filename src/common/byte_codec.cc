#include "src/common/byte_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ember {

void ByteWriter::Le(uint64_t v, int width) {
  for (int i = 0; i < width; i++) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void ByteWriter::Bytes(std::span<const uint8_t> v) {
  U32(static_cast<uint32_t>(v.size()));
  Raw(v);
}

void ByteWriter::String(std::string_view v) {
  Bytes({reinterpret_cast<const uint8_t*>(v.data()), v.size()});
}

void ByteWriter::BlobBytes(const void* p, size_t size) {
  U32(static_cast<uint32_t>(size));
  Raw({static_cast<const uint8_t*>(p), size});
}

bool ByteReader::Fail(std::string why) {
  if (ok()) error_ = std::move(why);
  return false;
}

const uint8_t* ByteReader::Take(size_t n) {
  if (!ok()) return nullptr;
  if (remaining() < n) {
    Fail(absl::StrCat("truncated: ", n, " bytes wanted at byte ", pos_, ", ", remaining(),
                      " left"));
    return nullptr;
  }
  const uint8_t* p = bytes_.data() + pos_;
  pos_ += n;
  return p;
}

bool ByteReader::Le(uint64_t* v, int width) {
  const uint8_t* p = Take(width);
  if (p == nullptr) return false;
  uint64_t x = 0;
  for (int i = 0; i < width; i++) x |= uint64_t{p[i]} << (8 * i);
  *v = x;
  return true;
}

bool ByteReader::U8(uint8_t* v) {
  uint64_t x;
  if (!Le(&x, 1)) return false;
  *v = static_cast<uint8_t>(x);
  return true;
}

bool ByteReader::U16(uint16_t* v) {
  uint64_t x;
  if (!Le(&x, 2)) return false;
  *v = static_cast<uint16_t>(x);
  return true;
}

bool ByteReader::U32(uint32_t* v) {
  uint64_t x;
  if (!Le(&x, 4)) return false;
  *v = static_cast<uint32_t>(x);
  return true;
}

bool ByteReader::U64(uint64_t* v) { return Le(v, 8); }

bool ByteReader::Bool(bool* v) {
  uint8_t x;
  if (!U8(&x)) return false;
  if (x > 1) {
    return Fail(absl::StrCat("byte ", pos_ - 1, " holds ", int{x}, ", not a bool (0 or 1)"));
  }
  *v = x == 1;
  return true;
}

bool ByteReader::Count(uint32_t* n, uint32_t max, size_t min_each) {
  uint32_t x;
  if (!U32(&x)) return false;
  if (x > max) return Fail(absl::StrCat("count ", x, " at byte ", pos_ - 4, " is over ", max));
  if (min_each != 0 && remaining() / min_each < x) {
    return Fail(absl::StrCat("truncated: count ", x, " at byte ", pos_ - 4, " needs ",
                             x * min_each, " bytes, ", remaining(), " left"));
  }
  *n = x;
  return true;
}

bool ByteReader::Raw(size_t n, std::span<const uint8_t>* v) {
  const uint8_t* p = Take(n);
  if (p == nullptr) return false;
  *v = {p, n};
  return true;
}

bool ByteReader::Bytes(std::vector<uint8_t>* v, uint32_t max) {
  uint32_t n;
  std::span<const uint8_t> s;
  if (!Count(&n, max, 1) || !Raw(n, &s)) return false;
  v->assign(s.begin(), s.end());
  return true;
}

bool ByteReader::String(std::string* v, uint32_t max) {
  uint32_t n;
  std::span<const uint8_t> s;
  if (!Count(&n, max, 1) || !Raw(n, &s)) return false;
  v->assign(reinterpret_cast<const char*>(s.data()), s.size());
  return true;
}

bool ByteReader::BlobBytes(void* p, size_t size) {
  uint32_t n;
  if (!U32(&n)) return false;
  if (n != size) {
    return Fail(absl::StrCat("a blob of ", n, " bytes at byte ", pos_ - 4,
                             " where this build's is ", size));
  }
  const uint8_t* src = Take(size);
  if (src == nullptr) return false;
  std::memcpy(p, src, size);
  return true;
}

absl::Status ByteReader::Finish(absl::string_view what) const {
  if (!ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", error_));
  if (remaining() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", remaining(), " bytes left over after the last field"));
  }
  return absl::OkStatus();
}

}  // namespace ember
