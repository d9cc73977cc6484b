#include "src/agent/network.h"

#include <net/if.h>  // before the linux/ headers, which defer to it
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <gtest/gtest.h>

#include "src/agent/netlink.h"
#include "src/agent/netns_testing.h"

namespace ember::agent {
namespace {

// A TAP stands in for the guest's virtio-net interface: an Ethernet link.
void MakeTap(const char* name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ifreq ifr{};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  ASSERT_EQ(ioctl(fd, TUNSETIFF, &ifr), 0);
  ASSERT_EQ(ioctl(fd, TUNSETPERSIST, 1), 0);
  close(fd);
}

constexpr uint32_t Ip(int a, int b, int c, int d) {
  return uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | uint32_t(d);
}

TEST(NetworkTest, TheGuestsInterfaceTakesTheContainersNetwork) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  NetworkSpec spec;
  spec.mac = {0x02, 0x42, 0x0a, 0x1e, 0x00, 0x05};
  spec.mtu = 1400;
  spec.addresses = {{Ip(10, 30, 0, 5), 24}};
  spec.neighbours = {{Ip(169, 254, 1, 1), {0x02, 0, 0, 0, 0, 0x01}}};
  // Calico's shape: a /32 gateway reached on the link, the default via it
  // (listed first to show the link routes go first); AWS's: a route
  // through a gateway "onlink".
  spec.routes = {{0, 0, Ip(169, 254, 1, 1), RT_SCOPE_UNIVERSE, 0},
                 {Ip(169, 254, 1, 1), 32, 0, RT_SCOPE_LINK, 0},
                 {Ip(10, 99, 0, 0), 16, Ip(169, 254, 9, 9), RT_SCOPE_UNIVERSE,
                  NetworkSpec::Route::kOnLink}};
  bool made = ember::testing::InNewNetworkNamespace([&] {
    MakeTap("guest0");
    std::string error;
    ASSERT_TRUE(ConfigureNetwork(spec, &error)) << error;
    // Again: what is there already is no error (a second start's request).
    ASSERT_TRUE(ConfigureNetwork(spec, &error)) << error;

    netlink::Socket s;
    std::vector<netlink::Link> links;
    std::vector<netlink::Address> addresses;
    std::vector<netlink::Route> routes;
    ASSERT_TRUE(s.Open(&error) && netlink::ListLinks(s, &links, &error) &&
                netlink::ListAddresses(s, &addresses, &error) &&
                netlink::ListRoutes(s, &routes, &error))
        << error;
    const netlink::Link *lo = nullptr, *eth = nullptr;
    for (const auto& l : links) {
      if (l.name == "lo") lo = &l;
      if (l.name == "guest0") eth = &l;
    }
    ASSERT_TRUE(lo && eth);
    EXPECT_TRUE(lo->flags & IFF_UP);
    EXPECT_TRUE(eth->flags & IFF_UP);
    EXPECT_EQ(eth->mac, spec.mac);
    EXPECT_EQ(eth->mtu, 1400u);
    EXPECT_NE(std::find(addresses.begin(), addresses.end(),
                        netlink::Address{eth->index, Ip(10, 30, 0, 5), 24}),
              addresses.end());
    netlink::Route default_route{0, 0, Ip(169, 254, 1, 1), RT_SCOPE_UNIVERSE, eth->index,
                                 false, RTPROT_BOOT};
    netlink::Route gateway{Ip(169, 254, 1, 1), 32, 0, RT_SCOPE_LINK, eth->index, false,
                           RTPROT_BOOT};
    EXPECT_NE(std::find(routes.begin(), routes.end(), default_route), routes.end());
    EXPECT_NE(std::find(routes.begin(), routes.end(), gateway), routes.end());
    netlink::Route onlink{Ip(10, 99, 0, 0), 16, Ip(169, 254, 9, 9), RT_SCOPE_UNIVERSE,
                          eth->index, true, RTPROT_BOOT};
    EXPECT_NE(std::find(routes.begin(), routes.end(), onlink), routes.end());
    std::vector<netlink::Neighbour> neighbours;
    ASSERT_TRUE(netlink::ListPermanentNeighbours(s, &neighbours, &error)) << error;
    EXPECT_EQ(neighbours, (std::vector<netlink::Neighbour>{
                              {eth->index, Ip(169, 254, 1, 1), {0x02, 0, 0, 0, 0, 0x01}}}));
  });
  if (!made) GTEST_SKIP() << "cannot make a network namespace";
}

TEST(NetworkTest, AGuestWithoutAnInterfaceSaysSo) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  bool made = ember::testing::InNewNetworkNamespace([] {
    std::string error;
    EXPECT_FALSE(ConfigureNetwork(NetworkSpec{}, &error));
    EXPECT_EQ(error, "the guest has no network interface for the container's network");
  });
  if (!made) GTEST_SKIP() << "cannot make a network namespace";
}

TEST(NetworkTest, AKernelRefusalNamesWhatWasRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  bool made = ember::testing::InNewNetworkNamespace([] {
    MakeTap("guest0");
    NetworkSpec spec;
    spec.addresses = {{Ip(10, 30, 0, 5), 24}};
    spec.routes = {{0, 0, Ip(192, 168, 9, 1)}};  // a gateway on no link
    std::string error;
    EXPECT_FALSE(ConfigureNetwork(spec, &error));
    EXPECT_EQ(error, "cannot add route to 0.0.0.0/0 via 192.168.9.1: Network is unreachable");
  });
  if (!made) GTEST_SKIP() << "cannot make a network namespace";
}

}  // namespace
}  // namespace ember::agent
