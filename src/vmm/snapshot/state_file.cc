#include "src/vmm/snapshot/state_file.h"

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/status_macros.h"

namespace ember::snapshot {
namespace {

constexpr char kMagic[8] = {'E', 'M', 'B', 'E', 'R', 'S', 'N', 'P'};
constexpr size_t kHeaderSize = sizeof(kMagic) + 4 + 8 + 4;

// Slicing-by-8 (Intel's, 2006): table[k][b] is the CRC of byte b followed
// by k zero bytes, so eight input bytes take eight lookups and no loop
// carried through each byte. About 5x the byte-at-a-time loop.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

CrcTables MakeCrcTables() {
  CrcTables t;
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    for (int k = 1; k < 8; k++) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  }
  return t;
}

absl::Status Bad(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("snapshot state file: ", why));
}

}  // namespace

uint32_t Crc32(std::span<const uint8_t> bytes) {
  static const CrcTables t = MakeCrcTables();
  uint32_t c = 0xffffffffu;
  const uint8_t* p = bytes.data();
  size_t n = bytes.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo = c ^ (p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
  }
  for (; n > 0; p++, n--) c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

void StateWriter::AddSection(uint16_t id, uint16_t version, std::span<const uint8_t> body) {
  payload_.U16(id);
  payload_.U16(version);
  payload_.U32(static_cast<uint32_t>(body.size()));
  payload_.Raw(body);
}

std::vector<uint8_t> StateWriter::Finish() const {
  ByteWriter out;
  out.Raw({reinterpret_cast<const uint8_t*>(kMagic), sizeof(kMagic)});
  out.U32(kStateVersion);
  out.U64(payload_.size());
  out.U32(Crc32(payload_.bytes()));
  out.Raw(payload_.bytes());
  return out.Take();
}

absl::StatusOr<StateReader> StateReader::Open(std::span<const uint8_t> file) {
  if (file.size() < kHeaderSize || std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0) {
    return Bad("not an Ember snapshot (bad magic or shorter than its header)");
  }
  ByteReader header(file.subspan(sizeof(kMagic), kHeaderSize - sizeof(kMagic)));
  uint32_t version = 0, crc = 0;
  uint64_t length = 0;
  header.U32(&version);
  header.U64(&length);
  header.U32(&crc);
  if (version != kStateVersion) {
    return Bad(absl::StrCat("version ", version, "; this Ember reads version ", kStateVersion));
  }
  if (length != file.size() - kHeaderSize) {
    return Bad(absl::StrCat("the payload is ", file.size() - kHeaderSize, " bytes, the header says ",
                            length, " (truncated or extended)"));
  }
  std::span<const uint8_t> payload = file.subspan(kHeaderSize);
  if (Crc32(payload) != crc) return Bad("checksum mismatch: the file is corrupted");

  // CRC-checked, so a section that overruns was written that way.
  std::vector<Section> sections;
  ByteReader r(payload);
  while (r.ok() && r.remaining() > 0) {
    Section s;
    uint32_t size = 0;
    r.U16(&s.id);
    r.U16(&s.version);
    r.U32(&size);
    if (r.Raw(size, &s.body)) sections.push_back(s);
  }
  RETURN_IF_ERROR(r.Finish("snapshot state file: sections"));
  return StateReader(std::move(sections), length, crc);
}

}  // namespace ember::snapshot
