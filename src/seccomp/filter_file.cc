#include "src/seccomp/filter_file.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ember::seccomp {
namespace {

constexpr char kMagic[8] = {'E', 'M', 'B', 'E', 'R', 'B', 'P', 'F'};
constexpr uint32_t kVersion = 1;
constexpr size_t kMaxNameLength = 64;

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; i++) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Reads from a byte span, refusing to run past its end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  bool Take(size_t n, const uint8_t** out) {
    if (bytes_.size() - pos_ < n) return false;
    *out = bytes_.data() + pos_;
    pos_ += n;
    return true;
  }
  bool U32(uint32_t* v) {
    const uint8_t* p;
    if (!Take(4, &p)) return false;
    *v = p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
    return true;
  }
  bool done() const { return pos_ == bytes_.size(); }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

absl::Status Malformed(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("seccomp filter file: ", why));
}

}  // namespace

std::vector<uint8_t> SerializeFilters(const FilterMap& filters) {
  std::vector<uint8_t> out(kMagic, kMagic + sizeof(kMagic));
  PutU32(&out, kVersion);
  PutU32(&out, static_cast<uint32_t>(filters.size()));
  for (const auto& [name, program] : filters) {
    PutU32(&out, static_cast<uint32_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    PutU32(&out, static_cast<uint32_t>(program.size()));
    auto* p = reinterpret_cast<const uint8_t*>(program.data());
    out.insert(out.end(), p, p + program.size() * sizeof(sock_filter));
  }
  return out;
}

absl::StatusOr<FilterMap> ParseFilters(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  const uint8_t* magic;
  uint32_t version = 0, count = 0;
  if (!r.Take(sizeof(kMagic), &magic) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return Malformed("not a filter file from ember-seccompiler (bad magic)");
  }
  if (!r.U32(&version) || version != kVersion) {
    return Malformed(absl::StrCat("version ", version, " is not ", kVersion));
  }
  if (!r.U32(&count)) return Malformed("truncated header");
  FilterMap filters;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t name_len, insns;
    const uint8_t* name;
    const uint8_t* code;
    if (!r.U32(&name_len) || name_len == 0 || name_len > kMaxNameLength ||
        !r.Take(name_len, &name)) {
      return Malformed(absl::StrCat("filter ", i, ": bad or truncated name"));
    }
    std::string kind(reinterpret_cast<const char*>(name), name_len);
    if (!r.U32(&insns) || insns > BPF_MAXINSNS) {
      return Malformed(absl::StrCat("filter '", kind, "': more than ", BPF_MAXINSNS,
                                    " instructions or truncated"));
    }
    if (!r.Take(size_t{insns} * sizeof(sock_filter), &code)) {
      return Malformed(absl::StrCat("filter '", kind, "' is truncated"));
    }
    BpfProgram program(insns);
    std::memcpy(program.data(), code, size_t{insns} * sizeof(sock_filter));
    if (!filters.emplace(kind, std::move(program)).second) {
      return Malformed(absl::StrCat("filter '", kind, "' appears twice"));
    }
  }
  if (!r.done()) return Malformed("trailing bytes after the last filter");
  return filters;
}

}  // namespace ember::seccomp
