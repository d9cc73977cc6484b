#include "src/devices/legacy/i8042.h"

#include <algorithm>

namespace ember {
namespace {
constexpr uint64_t kCommandPort = 4;
constexpr uint8_t kCommandReset = 0xfe;
}  // namespace

void I8042::Read(uint64_t, std::span<uint8_t> data) {
  // Status 0: output buffer empty, input buffer empty, ready for commands.
  std::fill(data.begin(), data.end(), 0);
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == kCommandPort && data.size() == 1 && data[0] == kCommandReset && reset_) reset_();
}

}  // namespace ember
