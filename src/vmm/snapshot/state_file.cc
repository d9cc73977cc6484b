#include "src/vmm/snapshot/state_file.h"

#include <array>

#include "absl/strings/str_cat.h"

namespace ember::snapshot {
namespace {

constexpr char kMagic[8] = {'E', 'M', 'B', 'E', 'R', 'S', 'N', 'P'};
constexpr size_t kHeaderSize = sizeof(kMagic) + 4 + 8 + 4;

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table;
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

absl::Status Bad(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("snapshot state file: ", why));
}

}  // namespace

uint32_t Crc32(std::span<const uint8_t> bytes) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  uint32_t c = 0xffffffffu;
  for (uint8_t b : bytes) c = table[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

void StateWriter::PutString(const std::string& s) {
  Put(static_cast<uint32_t>(s.size()));
  payload_.insert(payload_.end(), s.begin(), s.end());
}

std::vector<uint8_t> StateWriter::Finish() const {
  std::vector<uint8_t> out(kMagic, kMagic + sizeof(kMagic));
  auto put = [&out](const auto& v) {
    auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(v));
  };
  put(kStateVersion);
  put(static_cast<uint64_t>(payload_.size()));
  put(Crc32(payload_));
  out.insert(out.end(), payload_.begin(), payload_.end());
  return out;
}

absl::StatusOr<StateReader> StateReader::Open(std::span<const uint8_t> file) {
  if (file.size() < kHeaderSize || std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0) {
    return Bad("not an Ember snapshot (bad magic or shorter than its header)");
  }
  uint32_t version, crc;
  uint64_t length;
  std::memcpy(&version, file.data() + 8, 4);
  std::memcpy(&length, file.data() + 12, 8);
  std::memcpy(&crc, file.data() + 20, 4);
  if (version != kStateVersion) {
    return Bad(absl::StrCat("version ", version, "; this Ember reads version ", kStateVersion));
  }
  if (length != file.size() - kHeaderSize) {
    return Bad(absl::StrCat("the payload is ", file.size() - kHeaderSize, " bytes, the header says ",
                            length, " (truncated or extended)"));
  }
  std::span<const uint8_t> payload = file.subspan(kHeaderSize);
  if (Crc32(payload) != crc) return Bad("checksum mismatch: the file is corrupted");
  return StateReader(payload);
}

bool StateReader::GetString(std::string* s, uint32_t max) {
  uint32_t n;
  if (!Get(&n) || n > max || payload_.size() - pos_ < n) return Fail();
  s->assign(reinterpret_cast<const char*>(payload_.data() + pos_), n);
  pos_ += n;
  return true;
}

absl::Status StateReader::Finish() const {
  if (!ok_) return Bad("its contents are malformed (a field runs past the end or is too big)");
  if (pos_ != payload_.size()) return Bad("bytes left over after the last field");
  return absl::OkStatus();
}

}  // namespace ember::snapshot
