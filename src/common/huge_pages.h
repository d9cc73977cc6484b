// How guest memory is backed (machine-config.huge_pages, as Firecracker):
// the host's own 4 KiB pages, transparent huge pages asked for with
// madvise(MADV_HUGEPAGE), or 2 MiB pages from the host's hugetlbfs pool.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ember {

enum class HugePages { kNone, kTransparent, k2M };

inline constexpr uint64_t kHugePageBytes = uint64_t{2} << 20;

// Firecracker's spelling: "None", "Transparent", "2M".
inline const char* HugePagesName(HugePages h) {
  switch (h) {
    case HugePages::kTransparent:
      return "Transparent";
    case HugePages::k2M:
      return "2M";
    case HugePages::kNone:
      break;
  }
  return "None";
}

inline std::optional<HugePages> ParseHugePages(std::string_view name) {
  for (HugePages h : {HugePages::kNone, HugePages::kTransparent, HugePages::k2M}) {
    if (name == HugePagesName(h)) return h;
  }
  return std::nullopt;
}

}  // namespace ember
