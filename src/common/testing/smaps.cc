#include "src/common/testing/smaps.h"

#include <cstdint>
#include <fstream>
#include <sstream>

namespace ember::testing {

std::string VmFlags(const void* addr) {
  std::string flags = SmapsField(addr, "VmFlags:");
  return flags.empty() ? "" : " " + flags + " ";
}

std::string SmapsField(const void* addr, const std::string& key) {
  std::ifstream smaps("/proc/self/smaps");
  const auto a = reinterpret_cast<uintptr_t>(addr);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t start, end;
    char dash;
    std::istringstream header(line);
    if (header >> std::hex >> start >> dash >> end && dash == '-') {
      inside = start <= a && a < end;
    } else if (inside && line.rfind(key, 0) == 0) {
      size_t value = line.find_first_not_of(' ', key.size());
      return value == std::string::npos ? "" : line.substr(value);
    }
  }
  return "";
}

}  // namespace ember::testing
