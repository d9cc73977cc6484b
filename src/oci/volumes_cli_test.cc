// Read-only bind mounts following their sources, from the binary: create
// with a volume laid out as kubelet lays one out, start, then a new version
// of it, against a fake VMM and a fake agent that answers the process's
// EXEC and the SYNCs on connections of their own.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "src/agent/fd.h"
#include "src/agent/protocol.h"
#include "src/oci/cli_testing.h"

namespace {

using namespace ember::oci::testing;
using ember::agent::Fd;
using ember::agent::FrameDecoder;
using ember::agent::SyncRequest;
using ember::agent::Type;

class FakeAgent {
 public:
  explicit FakeAgent(const std::string& socket) : listener_(ListenUnix(socket)) {
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeAgent() {
    shutdown(listener_.get(), SHUT_RDWR);
    thread_.join();
  }
  std::vector<SyncRequest> syncs() {
    std::lock_guard<std::mutex> lock(mutex_);
    return syncs_;
  }
  ember::agent::ExecRequest exec() {
    std::lock_guard<std::mutex> lock(mutex_);
    return exec_;
  }
  // The container's process exits.
  void Exit() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string frame;
    ember::agent::AppendFrame(&frame, Type::kExit, ember::agent::EncodeExit({false, 0}));
    (void)!send(process_.get(), frame.data(), frame.size(), MSG_NOSIGNAL);
  }

 private:
  void Serve() {
    while (true) {
      Fd conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) return;
      char c;
      while (read(conn.get(), &c, 1) == 1 && c != '\n') {
      }
      (void)!send(conn.get(), "OK 1\n", 5, MSG_NOSIGNAL);
      FrameDecoder decoder(FrameDecoder::From::kClient);
      ember::agent::Frame frame{Type::kHello, ""};
      std::string error;
      char buf[65536];
      while (frame.type != Type::kSync && frame.type != Type::kExec) {
        auto result = decoder.Next(&frame, &error);
        if (result == FrameDecoder::Result::kBad) break;
        if (result == FrameDecoder::Result::kFrame) continue;
        ssize_t n = read(conn.get(), buf, sizeof(buf));
        if (n <= 0) break;
        decoder.Feed(std::string_view(buf, n));
      }
      std::lock_guard<std::mutex> lock(mutex_);
      std::string answer;
      if (frame.type == Type::kExec) {
        answer += AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)}});
        ember::agent::DecodeExec(frame.payload, &exec_, &error);
        (void)!send(conn.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
        process_ = std::move(conn);
      } else if (frame.type == Type::kSync) {
        answer += AgentFrames({{Type::kSynced, ""}});
        ember::agent::DecodeSync(frame.payload, &syncs_.emplace_back(), &error);
        (void)!send(conn.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
      }
    }
  }

  Fd listener_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<SyncRequest> syncs_;
  ember::agent::ExecRequest exec_;
  Fd process_;
};

// The data of `path` in a SYNC's tree, or "<none>".
std::string DataOf(const SyncRequest& sync, const std::string& path) {
  for (const auto& e : sync.entries) {
    if (e.path == path) return e.data;
  }
  return "<none>";
}

template <typename F>
bool WaitFor(F done) {
  for (int i = 0; i < 200 && !done(); ++i) usleep(50 * 1000);
  return done();
}

class OciVolumesTest : public OciFakeVmTest {};

TEST_F(OciVolumesTest, AReadOnlyVolumeFollowsItsSourceWhileTheContainerRuns) {
  if (geteuid() != 0) GTEST_SKIP() << "the VM's TAP needs root";
  std::string volume = dir_ + "/volume", data = dir_ + "/data";
  ASSERT_EQ(Sh("mkdir -p " + volume + "/..v1 " + data + " && echo one > " + volume +
               "/..v1/token && ln -s ..v1 " + volume + "/..data && ln -s ..data/token " +
               volume + "/token"),
            0);
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["/bin/server"]}, "root": {"path": "rootfs"}, "mounts": [)"
      << R"({"destination": "/data", "type": "bind", "source": ")" << data
      << R"(", "options": ["rbind", "rw"]},)"
      << R"({"destination": "/var/run/secrets/token", "type": "bind", "source": ")" << volume
      << R"(", "options": ["rbind", "ro"]}]})";
  ASSERT_EQ(Run("create --bundle " + bundle_ + " --pid-file " + dir_ + "/c1.pid c1").status, 0);
  FakeAgent agent(root_ + "/c1/v.sock");
  ASSERT_EQ(Run("start c1").status, 0);

  // Nothing has changed since create copied it: nothing to send at start.
  ASSERT_TRUE(WaitFor([&] { return !agent.exec().argv.empty(); }));
  usleep(300 * 1000);
  EXPECT_TRUE(agent.syncs().empty());
  ember::agent::ExecRequest exec = agent.exec();
  auto mount = std::find_if(exec.container.mounts.begin(), exec.container.mounts.end(),
                            [](const auto& m) { return m.target == "/var/run/secrets/token"; });
  ASSERT_NE(mount, exec.container.mounts.end());

  // kubelet's next version; a sync may come between the shell's steps, as
  // a bind would show them.
  ASSERT_EQ(Sh("cd " + volume + " && mkdir ..v2 && echo two > ..v2/token && ln -s ..v2 ..tmp && "
               "mv -T ..tmp ..data && rm -r ..v1"),
            0);
  ASSERT_TRUE(WaitFor([&] {
    auto syncs = agent.syncs();
    return !syncs.empty() && DataOf(syncs.back(), "..v2/token") == "two\n" &&
           DataOf(syncs.back(), "..v1/token") == "<none>";
  }));
  SyncRequest last = agent.syncs().back();
  EXPECT_EQ(last.device, exec.container.root_device);
  EXPECT_EQ(DataOf(last, "token"), "..data/token");
  for (const SyncRequest& s : agent.syncs()) EXPECT_EQ(s.top, mount->source) << "the rw mount";

  // Once the process has exited, nothing follows the volume any more.
  agent.Exit();
  ember::oci::ProcessRef monitor = Monitor("c1");
  ASSERT_TRUE(WaitFor([&] { return !ember::oci::Alive(monitor); }));
  usleep(300 * 1000);  // a SYNC sent just before is still answered
  size_t syncs = agent.syncs().size();
  ASSERT_EQ(Sh("echo three > " + volume + "/..v2/token"), 0);
  usleep(500 * 1000);
  EXPECT_EQ(agent.syncs().size(), syncs);
  EXPECT_EQ(Run("delete c1").status, 0);
}

}  // namespace
