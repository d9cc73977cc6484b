#include "src/oci/network.h"

#include <net/if.h>  // before the linux/ headers, which defer to it
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "src/agent/netlink.h"
#include "src/agent/netns_testing.h"
#include "src/oci/vm.h"

namespace ember::oci {
namespace {

namespace nl = agent::netlink;
using agent::NetworkSpec;

constexpr uint16_t kTestEtherType = 0x88b5;  // IEEE 802 local experimental

void Command(const std::vector<std::string>& argv) {
  std::string output;
  absl::Status s = RunTool(argv, &output);
  ASSERT_TRUE(s.ok()) << s.message();
}

// What a CNI plugin leaves: eth0, one end of a veth pair, with an address
// and a default route; its peer, peer0, is the wire's other side.
void MakeCniInterface() {
  Command({"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"});
  Command({"ip", "link", "set", "eth0", "mtu", "1450", "up"});
  Command({"ip", "link", "set", "peer0", "mtu", "1450", "up"});
  Command({"ip", "addr", "add", "10.20.0.2/24", "dev", "eth0"});
  Command({"ip", "route", "add", "default", "via", "10.20.0.1"});
}

nl::Link LinkNamed(const std::string& name) {
  nl::Socket s;
  std::string error;
  std::vector<nl::Link> links;
  EXPECT_TRUE(s.Open(&error) && nl::ListLinks(s, &links, &error)) << error;
  for (const nl::Link& l : links) {
    if (l.name == name) return l;
  }
  return {};
}

// The TAP as the VMM opens it (without the virtio-net header, to read
// frames as they are).
int OpenTap(const std::string& name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  ifreq ifr{};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) != 0) return -1;
  return fd;
}

std::string Frame(const std::array<uint8_t, 6>& to, const std::array<uint8_t, 6>& from,
                  const std::string& payload) {
  std::string f(reinterpret_cast<const char*>(to.data()), 6);
  f.append(reinterpret_cast<const char*>(from.data()), 6);
  f.push_back(static_cast<char>(kTestEtherType >> 8));
  f.push_back(static_cast<char>(kTestEtherType & 0xff));
  return f + payload;
}

// Sends `frame` through `from` every 100 ms, for up to 3 s, until a frame
// read from `to` carries `payload`. Once: a TAP's queue drops what it is
// given until the kernel's link watch has seen its carrier come on, which
// it does after OpenTap returns.
bool Carries(int from, const std::string& frame, int to, const std::string& payload) {
  for (int i = 0; i < 30; ++i) {
    if (write(from, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) {
      return false;
    }
    pollfd p{to, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[2048];
    ssize_t n;
    while ((n = read(to, buf, sizeof(buf))) > 0) {
      if (std::string(buf, n).find(payload) != std::string::npos) return true;
    }
  }
  return false;
}

#define IN_NEW_NETWORK_NAMESPACE(...)                                      \
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";      \
  if (!ember::testing::InNewNetworkNamespace([&] __VA_ARGS__)) {                  \
    GTEST_SKIP() << "cannot make a network namespace";                     \
  }

TEST(NetworkTest, TheTapTakesTheNamespacesInterfaceBothWays) {
  IN_NEW_NETWORK_NAMESPACE({
    MakeCniInterface();
    // AWS's VPC CNI's shapes: a permanent ARP entry for a gateway that
    // does not answer ARP, and a route through it "onlink".
    Command({"ip", "neigh", "add", "169.254.1.1", "lladdr", "02:00:00:00:00:01", "dev", "eth0",
             "nud", "permanent"});
    Command({"ip", "route", "add", "10.99.0.0/16", "via", "169.254.1.1", "dev", "eth0", "onlink"});
    ASSERT_TRUE(MakeTap("embertest0", 0, 0).ok());
    auto connection = ConnectTap("embertest0");
    ASSERT_TRUE(connection.ok()) << connection.status().message();
    ASSERT_TRUE(connection->network.has_value()) << connection->why;
    nl::Link eth0 = LinkNamed("eth0"), peer0 = LinkNamed("peer0");
    const NetworkSpec& n = *connection->network;
    EXPECT_EQ(n.mac, eth0.mac);
    EXPECT_EQ(n.mtu, 1450u);
    EXPECT_EQ(n.addresses, (std::vector<NetworkSpec::Address>{{0x0a140002, 24}}));
    EXPECT_EQ(n.neighbours, (std::vector<NetworkSpec::Neighbour>{
                                {0xa9fe0101, {0x02, 0x00, 0x00, 0x00, 0x00, 0x01}}}));
    // Not the kernel's route for the address's subnet: the guest's kernel
    // makes its own.
    EXPECT_EQ(n.routes, (std::vector<NetworkSpec::Route>{
                            {0, 0, 0x0a140001, 0, 0},
                            {0x0a630000, 16, 0xa9fe0101, 0, NetworkSpec::Route::kOnLink}}));
    EXPECT_EQ(LinkNamed("embertest0").mtu, 1450u);

    // The wire's frames reach the TAP, and the TAP's reach the wire.
    int tap = OpenTap("embertest0");
    ASSERT_GE(tap, 0) << strerror(errno);
    int wire = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
    ASSERT_GE(wire, 0);
    sockaddr_ll at{};
    at.sll_family = AF_PACKET;
    at.sll_protocol = htons(ETH_P_ALL);
    at.sll_ifindex = peer0.index;
    ASSERT_EQ(bind(wire, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0);
    EXPECT_TRUE(Carries(wire, Frame(eth0.mac, peer0.mac, "ember: from the wire"), tap,
                        "ember: from the wire"));
    EXPECT_TRUE(Carries(tap, Frame(peer0.mac, eth0.mac, "ember: from the guest"), wire,
                        "ember: from the guest"));
    close(tap);
    close(wire);

    // Connecting again (a restarted monitor's) keeps it.
    connection = ConnectTap("embertest0");
    ASSERT_TRUE(connection.ok());
    EXPECT_TRUE(connection->network.has_value()) << connection->why;

    // A second VM in the namespace (a pod's next container) gets nothing.
    ASSERT_TRUE(MakeTap("embertest1", 0, 0).ok());
    auto second = ConnectTap("embertest1");
    ASSERT_TRUE(second.ok());
    EXPECT_FALSE(second->network.has_value());
    EXPECT_EQ(second->why, "another microVM has eth0 (containers sharing a network namespace "
                           "cannot share its interface)");

    // Once the first is removed, with its redirect, the second may have it.
    RemoveTap("embertest0");
    EXPECT_EQ(LinkNamed("embertest0").index, 0);
    std::string output;
    ASSERT_TRUE(RunTool({"tc", "filter", "show", "dev", "eth0", "ingress"}, &output).ok());
    EXPECT_EQ(output, "");
    second = ConnectTap("embertest1");
    ASSERT_TRUE(second.ok());
    EXPECT_TRUE(second->network.has_value()) << second->why;
  });
}

TEST(NetworkTest, ARedirectToATapThatIsGoneIsTakenOver) {
  IN_NEW_NETWORK_NAMESPACE({
    MakeCniInterface();
    ASSERT_TRUE(MakeTap("embertest0", 0, 0).ok());
    ASSERT_TRUE(ConnectTap("embertest0").ok());
    // Its container's monitor was killed before it could clean up.
    Command({"ip", "link", "del", "embertest0"});
    ASSERT_TRUE(MakeTap("embertest1", 0, 0).ok());
    auto connection = ConnectTap("embertest1");
    ASSERT_TRUE(connection.ok());
    EXPECT_TRUE(connection->network.has_value()) << connection->why;
  });
}

// tc filters someone else put on the interface (a CNI plugin's, a mesh's)
// are not Ember's to replace; an ingress qdisc without filters (a connect
// killed halfway) is taken over.
TEST(NetworkTest, SomeoneElsesFiltersAreLeftAlone) {
  IN_NEW_NETWORK_NAMESPACE({
    MakeCniInterface();
    Command({"tc", "qdisc", "add", "dev", "eth0", "ingress"});
    ASSERT_TRUE(MakeTap("embertest0", 0, 0).ok());
    auto connection = ConnectTap("embertest0");
    ASSERT_TRUE(connection.ok()) << connection.status().message();
    EXPECT_TRUE(connection->network.has_value()) << connection->why;
    RemoveTap("embertest0");
    Command({"tc", "qdisc", "add", "dev", "eth0", "ingress"});
    Command({"tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "all", "u32",
             "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "peer0"});
    ASSERT_TRUE(MakeTap("embertest1", 0, 0).ok());
    connection = ConnectTap("embertest1");
    ASSERT_TRUE(connection.ok());
    EXPECT_FALSE(connection->network.has_value());
    EXPECT_EQ(connection->why, "eth0 has tc ingress filters of someone else's: left alone");
    RemoveTap("embertest1");
    std::string output;
    ASSERT_TRUE(RunTool({"tc", "filter", "show", "dev", "eth0", "ingress"}, &output).ok());
    EXPECT_NE(output.find("peer0"), std::string::npos) << "still there: " << output;
  });
}

// Two containers of a pod starting at once: exactly one gets the
// interface.
TEST(NetworkTest, ConnectsAtOnceTakeTurns) {
  IN_NEW_NETWORK_NAMESPACE({
    MakeCniInterface();
    for (int round = 0; round < 5; ++round) {
      std::string a = "embera" + std::to_string(round), b = "emberb" + std::to_string(round);
      ASSERT_TRUE(MakeTap(a, 0, 0).ok() && MakeTap(b, 0, 0).ok());
      absl::StatusOr<Connection> got_a, got_b;
      std::thread first([&] { got_a = ConnectTap(a); });
      std::thread second([&] { got_b = ConnectTap(b); });
      first.join();
      second.join();
      ASSERT_TRUE(got_a.ok() && got_b.ok());
      EXPECT_NE(got_a->network.has_value(), got_b->network.has_value()) << round;
      RemoveTap(a);
      RemoveTap(b);
    }
  });
}

// A namespace that is the host's never has its interfaces given away.
TEST(NetworkTest, TheHostsNamespaceIsNotGiven) {
  // This thread is in the host's namespace; the check comes before any
  // change, and the TAP does not exist either.
  if (!IsHostNetworkNamespace("/proc/thread-self/ns/net")) GTEST_SKIP() << "not the host's";
  auto connection = ConnectTap("embernone");
  ASSERT_TRUE(connection.ok());
  EXPECT_FALSE(connection->network.has_value());
  EXPECT_EQ(connection->why, "the container's network namespace is the host's: its interfaces "
                             "are not given to a microVM");
  IN_NEW_NETWORK_NAMESPACE({ EXPECT_FALSE(IsHostNetworkNamespace("/proc/thread-self/ns/net")); });
}

// config.json naming the runtime's own namespace (the host's, as far as it
// knows) gets a namespace of its own instead, as one without the entry.
TEST(NetworkTest, JoiningTheRuntimesOwnNamespaceMakesANewOne) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  struct stat before, after;
  ASSERT_EQ(stat("/proc/thread-self/ns/net", &before), 0);
  absl::Status joined;
  std::thread([&] {  // a thread's namespace is its own
    joined = JoinNetworkNamespace(std::string("/proc/thread-self/ns/net"));
    stat("/proc/thread-self/ns/net", &after);
  }).join();
  ASSERT_TRUE(joined.ok()) << joined.message();
  EXPECT_NE(after.st_ino, before.st_ino);
}

// The most the agent takes (64 of each): one route more fails the start
// with a clear error rather than a guest missing a route.
TEST(NetworkTest, MoreRoutesThanTheAgentTakesAreAnError) {
  IN_NEW_NETWORK_NAMESPACE({
    MakeCniInterface();  // its default route is one
    for (int i = 0; i < 63; ++i) {
      Command({"ip", "route", "add", "10.100." + std::to_string(i) + ".0/24", "via", "10.20.0.1"});
    }
    ASSERT_TRUE(MakeTap("embertest0", 0, 0).ok());
    auto connection = ConnectTap("embertest0");
    ASSERT_TRUE(connection.ok()) << connection.status().message();
    ASSERT_TRUE(connection->network.has_value()) << connection->why;
    EXPECT_EQ(connection->network->routes.size(), 64u);
    RemoveTap("embertest0");
    Command({"ip", "route", "add", "10.101.0.0/24", "via", "10.20.0.1"});
    ASSERT_TRUE(MakeTap("embertest1", 0, 0).ok());
    connection = ConnectTap("embertest1");
    EXPECT_EQ(connection.status().message(),
              "eth0 has more than 64 addresses, permanent neighbours or routes");
  });
}

TEST(NetworkTest, ANamespaceWithoutAnAddressGivesTheGuestNone) {
  IN_NEW_NETWORK_NAMESPACE({
    // ctr run without CNI: loopback only.
    ASSERT_TRUE(MakeTap("embertest0", 0, 0).ok());
    auto connection = ConnectTap("embertest0");
    ASSERT_TRUE(connection.ok());
    EXPECT_FALSE(connection->network.has_value());
    EXPECT_EQ(connection->why, "the network namespace has no interface with an IPv4 address");
    auto gone = ConnectTap("embertest9");
    EXPECT_EQ(gone.status().message(), "the VM's TAP device embertest9 is gone");
  });
}

TEST(NetworkTest, TheJailsUserMayOpenTheTap) {
  IN_NEW_NETWORK_NAMESPACE({
    ASSERT_TRUE(MakeTap("embertest0", 65534, 65534).ok());
    ASSERT_TRUE(MakeTap("embertest1", 0, 0).ok());
    // The jail's own /dev/net/tun is the jail user's (this host's is
    // root's alone): the device is opened first, then the TAP attached as
    // nobody, where the kernel checks the TAP's owner.
    auto open_as_nobody = [](const char* name) {
      pid_t pid = fork();
      if (pid == 0) {
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0 || setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
            setresuid(65534, 65534, 65534) != 0) {
          _exit(2);
        }
        ifreq ifr{};
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;  // the VMM's flags
        _exit(ioctl(fd, TUNSETIFF, &ifr) == 0 ? 0 : 1);
      }
      int status = -1;
      waitpid(pid, &status, 0);
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    EXPECT_EQ(open_as_nobody("embertest0"), 0);
    EXPECT_EQ(open_as_nobody("embertest1"), 1);  // root's: the owner check holds
  });
}

TEST(NetworkTest, TapNamesFitAndDifferPerContainer) {
  std::string a = TapName("/run/ember-oci/k8s.io", "abc"), b = TapName("/run/ember-oci/k8s.io", "abd");
  EXPECT_EQ(a.size(), 15u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a, TapName("/run/ember-oci/k8s.io", "abc"));
}

TEST(PodSandboxTest, ThePauseContainerAsCriAndCriOMarkIt) {
  EXPECT_TRUE(IsPodSandbox({{"io.kubernetes.cri.container-type", "sandbox"},
                            {"io.kubernetes.cri.sandbox-id", "abc"}},
                           "abc"));
  EXPECT_TRUE(IsPodSandbox({{"io.kubernetes.cri-o.ContainerType", "sandbox"},
                            {"io.kubernetes.cri-o.SandboxID", "abc"}},
                           "abc"));
  // A pod's application container, and a user's that carries the type.
  EXPECT_FALSE(IsPodSandbox({{"io.kubernetes.cri.container-type", "container"},
                             {"io.kubernetes.cri.sandbox-id", "abc"}},
                            "abc"));
  EXPECT_FALSE(IsPodSandbox({{"io.kubernetes.cri.container-type", "sandbox"},
                             {"io.kubernetes.cri.sandbox-id", "abc"}},
                            "def"));
  EXPECT_FALSE(IsPodSandbox({{"io.kubernetes.cri.container-type", "sandbox"}}, "abc"));
  EXPECT_FALSE(IsPodSandbox({}, "abc"));
}

}  // namespace
}  // namespace ember::oci
