#include "src/vstate/bus.h"

#include "absl/strings/str_format.h"

namespace ember {

absl::Status Bus::Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len) {
  if (len == 0 || base + len < base) {
    return absl::InvalidArgumentError(absl::StrFormat("bad bus range [%#x, +%#x)", base, len));
  }
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len) {
    return absl::AlreadyExistsError(absl::StrFormat("bus range %#x overlaps %#x", base, next->first));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.len > base) {
      return absl::AlreadyExistsError(
          absl::StrFormat("bus range %#x overlaps %#x", base, prev->first));
    }
  }
  ranges_.emplace(base, Range{len, std::move(device)});
  return absl::OkStatus();
}

BusDevice* Bus::Find(uint64_t addr, uint64_t size, uint64_t* offset) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  uint64_t off = addr - it->first;
  if (off >= it->second.len || size > it->second.len - off) return nullptr;
  *offset = off;
  return it->second.device.get();
}

bool Bus::Read(uint64_t addr, std::span<uint8_t> data) const {
  uint64_t offset;
  BusDevice* dev = Find(addr, data.size(), &offset);
  if (dev == nullptr) return false;
  dev->Read(offset, data);
  return true;
}

bool Bus::Write(uint64_t addr, std::span<const uint8_t> data) const {
  uint64_t offset;
  BusDevice* dev = Find(addr, data.size(), &offset);
  if (dev == nullptr) return false;
  dev->Write(offset, data);
  return true;
}

}  // namespace ember
