// The snapshot state file's framing: a checked header, then a payload of
// versioned sections, all little-endian (src/common/byte_codec.h):
//   "EMBERSNP" | u32 file version | u64 payload length | u32 CRC-32 of
//   payload | sections...
//   section: u16 id | u16 version | u32 body length | body
// A file that is truncated, longer, of another file version or whose
// checksum does not match is refused before any of it is used; what a
// section's id and version mean is up to the reader of its body.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/byte_codec.h"

namespace ember::snapshot {

// 1: whole in-memory structs copied in (refused); 2: explicit sections.
inline constexpr uint32_t kStateVersion = 2;

uint32_t Crc32(std::span<const uint8_t> bytes);

class StateWriter {
 public:
  void AddSection(uint16_t id, uint16_t version, std::span<const uint8_t> body);
  // The whole file: header and payload.
  std::vector<uint8_t> Finish() const;

 private:
  ByteWriter payload_;
};

struct Section {
  uint16_t id;
  uint16_t version;
  std::span<const uint8_t> body;  // into the file given to StateReader::Open
};

class StateReader {
 public:
  // Checks the header and that the sections tile the payload exactly.
  static absl::StatusOr<StateReader> Open(std::span<const uint8_t> file);
  // In file order.
  const std::vector<Section>& sections() const { return sections_; }
  // From the header, checked: what names this file (snapshot/working_set.h).
  uint64_t payload_length() const { return payload_length_; }
  uint32_t crc() const { return crc_; }

 private:
  StateReader(std::vector<Section> sections, uint64_t payload_length, uint32_t crc)
      : sections_(std::move(sections)), payload_length_(payload_length), crc_(crc) {}

  std::vector<Section> sections_;
  uint64_t payload_length_;
  uint32_t crc_;
};

}  // namespace ember::snapshot
