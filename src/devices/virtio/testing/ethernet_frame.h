// A broadcast Ethernet frame for tests and benchmarks, with an experimental
// ethertype (0x88b5) that the host stack ignores and tests can pick out.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace ember::virtio::testing {

inline constexpr uint8_t kTestEtherType[2] = {0x88, 0xb5};

inline std::vector<uint8_t> EthernetFrame(size_t len, uint8_t fill) {
  std::vector<uint8_t> f(len, fill);
  std::memset(f.data(), 0xff, 6);  // broadcast destination
  const uint8_t src[6] = {0x02, 0, 0, 0, 0, 1};
  std::memcpy(f.data() + 6, src, 6);
  f[12] = kTestEtherType[0];
  f[13] = kTestEtherType[1];
  return f;
}

}  // namespace ember::virtio::testing
