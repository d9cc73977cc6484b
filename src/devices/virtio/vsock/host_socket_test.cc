// The CONNECT line host programs send.
#include "src/devices/virtio/vsock/host_socket.h"

#include <gtest/gtest.h>

namespace ember::virtio::vsock {
namespace {

TEST(ConnectLine, AcceptsFirecrackersForm) {
  EXPECT_EQ(ParseConnectLine("CONNECT 52"), 52u);
  EXPECT_EQ(ParseConnectLine("connect 52"), 52u);
  EXPECT_EQ(ParseConnectLine("Connect   4294967295  "), 4294967295u);
  EXPECT_EQ(ParseConnectLine("CONNECT\t0"), 0u);
}

TEST(ConnectLine, RefusesEverythingElse) {
  for (const char* bad : {"", "CONNECT", "CONNECT ", "CONNECT52", "CONNECTED 5", "LISTEN 5",
                          "CONNECT -1", "CONNECT +1", "CONNECT 4294967296", "CONNECT 5 6",
                          "CONNECT 0x10", "CONNECT 5a"}) {
    EXPECT_FALSE(ParseConnectLine(bad)) << bad;
  }
}

}  // namespace
}  // namespace ember::virtio::vsock
