// ember-oci's side of a container's network, from the binary itself:
// create, start and delete in a namespace set up as a CNI plugin sets one
// up, against a fake VMM and a fake agent.
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <array>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "src/agent/protocol.h"
#include "src/oci/cli_testing.h"
#include "src/oci/network.h"
#include "src/oci/state.h"
#include "src/oci/vm.h"

namespace {

using namespace ember::oci::testing;

// The whole host side of a container's network, against a fake VMM and a
// fake agent, in a namespace set up as a CNI plugin sets one up: eth0 with
// an address and a default route.
class OciNetworkTest : public OciFakeVmTest {
 protected:
  void SetUp() override {
    OciFakeVmTest::SetUp();
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
    RemoveNamespacesOfDeadTests();
    ns_ = std::string(kPrefix) + std::to_string(getpid());
    if (Sh("ip netns add " + ns_) != 0) GTEST_SKIP() << "cannot make a network namespace";
    made_ns_ = true;
    ASSERT_EQ(Sh(InNs("link add eth0 type veth peer name peer0")), 0);
    ASSERT_EQ(Sh(InNs("link set eth0 address 02:42:0a:14:00:02 mtu 1450 up")), 0);
    ASSERT_EQ(Sh(InNs("addr add 10.20.0.2/24 dev eth0")), 0);
    ASSERT_EQ(Sh(InNs("route add default via 10.20.0.1")), 0);
  }
  void TearDown() override {
    StopMonitors();
    if (made_ns_) Sh("ip netns del " + ns_);
    OciFakeVmTest::TearDown();
  }

  static constexpr char kPrefix[] = "ember-oci-test-";

  // A test process that crashed could not delete its namespace: those whose
  // process is gone are deleted here.
  static void RemoveNamespacesOfDeadTests() {
    DIR* d = opendir("/run/netns");
    while (dirent* e = d ? readdir(d) : nullptr) {
      std::string name = e->d_name;
      if (name.rfind(kPrefix, 0) != 0) continue;
      pid_t pid = atoi(name.c_str() + strlen(kPrefix));
      if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) Sh("ip netns del " + name);
    }
    if (d) closedir(d);
  }

  std::string InNs(const std::string& args) { return "ip -n " + ns_ + " " + args; }

  // Creates container `id` in the namespace (its pid file: <dir>/<id>.pid)
  // with `annotation` ("key": "value", or "").
  int Create(const std::string& id, const std::string& annotation = "") {
    std::ofstream(bundle_ + "/config.json")
        << R"({"process": {"args": ["/bin/server"]}, "root": {"path": "rootfs"},)"
        << R"( "annotations": {)" << annotation << "},"
        << R"( "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/)" << ns_
        << R"("}]}})";
    return Run("create --bundle " + bundle_ + " --pid-file " + dir_ + "/" + id + ".pid " + id)
        .status;
  }

  std::string ns_;
  bool made_ns_ = false;
};

std::string RunToExit() {
  using ember::agent::Type;
  return AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)},
                      {Type::kExit, ember::agent::EncodeExit({false, 0})}});
}

TEST_F(OciNetworkTest, StartGivesTheGuestTheNamespacesNetwork) {
  ASSERT_EQ(Create("c1"), 0);
  std::string tap = ember::oci::TapName(root_, "c1");
  EXPECT_EQ(Sh(InNs("link show " + tap)), 0) << "the VMM's TAP is there before it starts";
  FakeGuest guest(root_ + "/c1/v.sock", RunToExit());
  ASSERT_EQ(Run("start c1").status, 0);
  ember::oci::ProcessRef monitor = Monitor("c1");
  for (int i = 0; i < 100 && ember::oci::Alive(monitor); ++i) usleep(100 * 1000);
  ASSERT_FALSE(ember::oci::Alive(monitor));

  ember::agent::ExecRequest request = ExecIn(guest.Received());
  ASSERT_TRUE(request.container.has_network);
  const ember::agent::NetworkSpec& n = request.container.network;
  EXPECT_EQ(n.mac, (std::array<uint8_t, 6>{0x02, 0x42, 0x0a, 0x14, 0x00, 0x02}));
  EXPECT_EQ(n.mtu, 1450u);
  EXPECT_EQ(n.addresses, (std::vector<ember::agent::NetworkSpec::Address>{{0x0a140002, 24}}));
  EXPECT_NE(std::find(n.routes.begin(), n.routes.end(),
                      ember::agent::NetworkSpec::Route{0, 0, 0x0a140001}),
            n.routes.end());
  EXPECT_EQ(FirstLine(root_ + "/c1/network"), "10.20.0.2/24 mtu 1450");
  EXPECT_NE(Sh(InNs("link show " + tap)), 0) << "the monitor removed its TAP";
  EXPECT_EQ(Run("delete c1").status, 0);
}

// A pod's namespace outlives its containers: a TAP left by a monitor that
// was killed goes at delete, with the redirect into it.
TEST_F(OciNetworkTest, DeleteRemovesTheTapOfAKilledMonitor) {
  using ember::agent::Type;
  ASSERT_EQ(Create("c1"), 0);
  std::string tap = ember::oci::TapName(root_, "c1");
  FakeGuest guest(root_ + "/c1/v.sock", AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)}}));
  ASSERT_EQ(Run("start c1").status, 0);
  for (int i = 0; i < 100 && access((root_ + "/c1/network").c_str(), F_OK) != 0; ++i) {
    usleep(100 * 1000);
  }
  ASSERT_EQ(FirstLine(root_ + "/c1/network"), "10.20.0.2/24 mtu 1450");
  kill(Monitor("c1").pid, SIGKILL);
  EXPECT_EQ(Sh(InNs("link show " + tap)), 0);
  EXPECT_EQ(Run("delete --force c1").status, 0);
  EXPECT_NE(Sh(InNs("link show " + tap)), 0);
  std::string output;
  ASSERT_TRUE(ember::oci::RunTool({"ip", "netns", "exec", ns_, "tc", "filter", "show", "dev",
                                   "eth0", "ingress"}, &output).ok());
  EXPECT_EQ(output, "");
}

// Only one microVM can have the namespace's interface: a second container
// runs without, and says so in its note and in ember-oci's log.
TEST_F(OciNetworkTest, ASecondContainerInTheNamespaceRunsWithoutIt) {
  using ember::agent::Type;
  ASSERT_EQ(Create("c1"), 0);
  FakeGuest first(root_ + "/c1/v.sock", AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)}}));
  ASSERT_EQ(Run("start c1").status, 0);
  ASSERT_EQ(Create("c2"), 0);
  FakeGuest second(root_ + "/c2/v.sock", RunToExit());
  ASSERT_EQ(Run("start c2").status, 0);
  ember::oci::ProcessRef monitor = Monitor("c2");
  for (int i = 0; i < 100 && ember::oci::Alive(monitor); ++i) usleep(100 * 1000);
  ASSERT_FALSE(ember::oci::Alive(monitor));
  std::string why = "another microVM has eth0 (containers sharing a network namespace cannot "
                    "share its interface)";
  EXPECT_EQ(FirstLine(root_ + "/c2/network"), why);
  std::stringstream log;
  log << std::ifstream(dir_ + "/log.json").rdbuf();
  EXPECT_NE(log.str().find("the container has no network: " + why), std::string::npos)
      << log.str();
  EXPECT_FALSE(ExecIn(second.Received()).container.has_network);
  EXPECT_EQ(Run("delete --force c1").status, 0);
  EXPECT_TRUE(ExecIn(first.Received()).container.has_network);
  EXPECT_EQ(Run("delete c2").status, 0);
}

// A Kubernetes pod's sandbox (pause) runs no microVM and takes no network:
// the pod's container, in the same namespace, gets it.
TEST_F(OciNetworkTest, APodsSandboxLeavesTheNetworkToItsContainer) {
  const std::string pod = R"(, "io.kubernetes.cri.sandbox-id": "pause")";
  ASSERT_EQ(Create("pause", R"("io.kubernetes.cri.container-type": "sandbox")" + pod), 0);
  ASSERT_EQ(Run("start pause").status, 0);
  ASSERT_EQ(Create("app", R"("io.kubernetes.cri.container-type": "container")" + pod), 0);
  FakeGuest app(root_ + "/app/v.sock", RunToExit());
  ASSERT_EQ(Run("start app").status, 0);
  ember::oci::ProcessRef monitor = Monitor("app");
  for (int i = 0; i < 100 && ember::oci::Alive(monitor); ++i) usleep(100 * 1000);
  ASSERT_FALSE(ember::oci::Alive(monitor));
  EXPECT_TRUE(ExecIn(app.Received()).container.has_network);
  EXPECT_NE(Sh(InNs("link show " + ember::oci::TapName(root_, "pause"))), 0);
  EXPECT_NE(access((root_ + "/pause/console.log").c_str(), F_OK), 0);
  EXPECT_EQ(Run("delete --force pause").status, 0);
  EXPECT_NE(access((root_ + "/pause/network").c_str(), F_OK), 0);
  EXPECT_EQ(Run("delete app").status, 0);
}

}  // namespace
