#include "src/config/cpu_template.h"

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ember {
namespace {

constexpr std::pair<StaticCpuTemplate, const char*> kStaticNames[] = {
    {StaticCpuTemplate::kNone, "None"}, {StaticCpuTemplate::kC3, "C3"},
    {StaticCpuTemplate::kT2, "T2"},     {StaticCpuTemplate::kT2S, "T2S"},
    {StaticCpuTemplate::kT2CL, "T2CL"}, {StaticCpuTemplate::kT2A, "T2A"},
};

}  // namespace

const char* StaticCpuTemplateName(StaticCpuTemplate t) {
  for (const auto& [value, name] : kStaticNames) {
    if (value == t) return name;
  }
  return "None";
}

std::optional<StaticCpuTemplate> ParseStaticCpuTemplate(const std::string& name) {
  for (const auto& [value, text] : kStaticNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

absl::StatusOr<BitFilter<uint64_t>> ParseBitmap(const std::string& text, int bits,
                                               const std::string& what) {
  std::string digits = text.rfind("0b", 0) == 0 ? text.substr(2) : text;
  BitFilter<uint64_t> out;
  int bit = 0;
  for (auto c = digits.rbegin(); c != digits.rend(); ++c) {
    // Firecracker's order: nothing at all may follow the last bit.
    if (bit == bits) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " '", text, "' has more than ", bits, " bits"));
    }
    if (*c == '_') continue;
    uint64_t mask = uint64_t{1} << bit;
    if (*c == '0' || *c == '1') {
      out.filter |= mask;
      if (*c == '1') out.value |= mask;
    } else if (*c != 'x') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " '", text, "' may hold only '0', '1', 'x' (keep) and '_' after \"0b\""));
    }
    bit++;
  }
  return out;
}

std::string BitmapString(const BitFilter<uint64_t>& bits, int width) {
  std::string out = "0b";
  for (int bit = width - 1; bit >= 0; bit--) {
    uint64_t mask = uint64_t{1} << bit;
    out += !(bits.filter & mask) ? 'x' : (bits.value & mask) ? '1' : '0';
  }
  return out;
}

absl::StatusOr<uint32_t> ParseRegisterNumber(const std::string& text, const std::string& what) {
  int base = 10;
  std::string digits = text;
  if (text.rfind("0x", 0) == 0) {
    base = 16;
    digits = text.substr(2);
  } else if (text.rfind("0b", 0) == 0) {
    base = 2;
    digits = text.substr(2);
  }
  const char* valid = base == 16 ? "0123456789abcdefABCDEF" : base == 2 ? "01" : "0123456789";
  bool ok = !digits.empty() && digits.find_first_not_of(valid) == std::string::npos;
  char* end = nullptr;
  errno = 0;
  unsigned long long n = ok ? std::strtoull(digits.c_str(), &end, base) : 0;
  if (!ok || *end != '\0' || errno != 0 || n > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " '", text, "' must be a 32-bit number: \"0x\" hex, \"0b\" binary or decimal"));
  }
  return static_cast<uint32_t>(n);
}

}  // namespace ember
