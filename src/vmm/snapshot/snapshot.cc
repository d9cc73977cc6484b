#include "src/vmm/snapshot/snapshot.h"

#include "absl/strings/str_cat.h"
#include "src/common/status_macros.h"
#include "src/vmm/snapshot/state_file.h"

namespace ember::snapshot {
namespace {

constexpr uint32_t kMaxVcpus = 32;
constexpr uint32_t kMaxConfig = 1 << 20;
constexpr uint32_t kMaxDevices = 64;

// The sections this Ember writes and reads. An id is never reused; a
// change to a section's encoding bumps its version.
enum SectionId : uint16_t {
  kConfig = 1,
  kMemory = 2,
  kVm = 3,
  kVcpu = 4,
  kSerial = 5,
  kI8042 = 6,
  kVirtio = 7,
};

struct SectionKind {
  SectionId id;
  const char* name;
  uint16_t version;
  bool repeats;  // one per vCPU or device; otherwise exactly once
};

constexpr SectionKind kSections[] = {
    {kConfig, "config", 1, false},
    {kMemory, "memory", 1, false},
    {kVm, "vm", VmState::kVersion, false},
    {kVcpu, "vcpu", VcpuState::kVersion, true},
    {kSerial, "serial", Serial::State::kVersion, false},
    {kI8042, "i8042", I8042::State::kVersion, false},
    {kVirtio, "virtio", virtio::MmioTransport::State::kVersion, true},
};

const SectionKind* FindSection(uint16_t id) {
  for (const SectionKind& k : kSections) {
    if (k.id == id) return &k;
  }
  return nullptr;
}

absl::Status Bad(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("snapshot state file: ", why));
}

// Writes one section whose body `encode` fills.
template <typename F>
void Add(StateWriter& file, SectionId id, F encode) {
  ByteWriter w;
  encode(w);
  file.AddSection(id, FindSection(id)->version, w.bytes());
}

// Decodes one section's body into `s`; false (and `r` says why) when it is
// malformed or one too many.
bool DecodeBody(uint16_t id, ByteReader& r, SnapshotState& s) {
  switch (id) {
    case kConfig: return r.String(&s.config_json, kMaxConfig);
    case kMemory: return DecodeMemoryRanges(r, &s.memory);
    case kVm: return s.machine.vm.Decode(r);
    case kSerial: return s.serial.Decode(r);
    case kI8042: return s.i8042.Decode(r);
    case kVcpu:
      if (s.machine.vcpus.size() == kMaxVcpus) {
        return r.Fail(absl::StrCat("more than ", kMaxVcpus, " vCPUs"));
      }
      return s.machine.vcpus.emplace_back().Decode(r);
    case kVirtio:
      if (s.virtio.size() == kMaxDevices) {
        return r.Fail(absl::StrCat("more than ", kMaxDevices, " devices"));
      }
      return s.virtio.emplace_back().Decode(r);
  }
  return r.Fail("unknown section");  // FindSection let it through: a bug
}

}  // namespace

void EncodeMemoryRanges(const std::vector<MemoryRange>& ranges, ByteWriter& w) {
  w.U32(static_cast<uint32_t>(ranges.size()));
  for (const MemoryRange& m : ranges) {
    w.U64(m.guest_addr);
    w.U64(m.size);
  }
}

bool DecodeMemoryRanges(ByteReader& r, std::vector<MemoryRange>* ranges) {
  uint32_t n;
  if (!r.Count(&n, kMaxMemoryRanges, 16)) return false;
  ranges->assign(n, {});
  for (MemoryRange& m : *ranges) {
    if (!r.U64(&m.guest_addr) || !r.U64(&m.size)) return false;
  }
  return true;
}

std::vector<uint8_t> EncodeSnapshot(const SnapshotState& s) {
  StateWriter file;
  Add(file, kConfig, [&](ByteWriter& w) { w.String(s.config_json); });
  Add(file, kMemory, [&](ByteWriter& w) { EncodeMemoryRanges(s.memory, w); });
  Add(file, kVm, [&](ByteWriter& w) { s.machine.vm.Encode(w); });
  for (const VcpuState& v : s.machine.vcpus) {
    Add(file, kVcpu, [&](ByteWriter& w) { v.Encode(w); });
  }
  Add(file, kSerial, [&](ByteWriter& w) { s.serial.Encode(w); });
  Add(file, kI8042, [&](ByteWriter& w) { s.i8042.Encode(w); });
  for (const virtio::MmioTransport::State& v : s.virtio) {
    Add(file, kVirtio, [&](ByteWriter& w) { v.Encode(w); });
  }
  return file.Finish();
}

absl::StatusOr<SnapshotState> DecodeSnapshot(std::span<const uint8_t> file) {
  ASSIGN_OR_RETURN(StateReader reader, StateReader::Open(file));
  SnapshotState s;
  int seen[std::size(kSections)] = {};
  for (const Section& section : reader.sections()) {
    const SectionKind* kind = FindSection(section.id);
    if (kind == nullptr) return Bad(absl::StrCat("unknown section id ", section.id));
    if (section.version != kind->version) {
      return Bad(absl::StrCat("section '", kind->name, "' version ", section.version,
                              "; this Ember reads version ", kind->version));
    }
    if (seen[kind - kSections]++ > 0 && !kind->repeats) {
      return Bad(absl::StrCat("section '", kind->name, "' appears twice"));
    }
    ByteReader r(section.body);
    DecodeBody(section.id, r, s);
    RETURN_IF_ERROR(r.Finish(absl::StrCat("snapshot state file: section '", kind->name, "'")));
  }
  for (const SectionKind& k : kSections) {
    if (!k.repeats && seen[&k - kSections] == 0) {
      return Bad(absl::StrCat("no '", k.name, "' section"));
    }
  }
  if (s.machine.vcpus.empty() || s.memory.empty()) return Bad("no vCPUs or no memory");
  s.id = {reader.payload_length(), reader.crc(), 0};
  for (const MemoryRange& m : s.memory) s.id.memory_bytes += m.size;
  return s;
}

}  // namespace ember::snapshot
