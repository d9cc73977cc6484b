#include "src/oci/volumes.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "src/agent/fd.h"
#include "src/agent/sync.h"
#include "src/oci/cli_testing.h"

namespace ember::oci {
namespace {

using agent::Fd;
using agent::TreeEntry;

class VolumesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ember-volumes-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    source_ = dir_ + "/source";
    ASSERT_EQ(mkdir(source_.c_str(), 0755), 0);
  }
  void TearDown() override { (void)!system(("rm -rf " + dir_).c_str()); }

  void Sh(const std::string& command) {
    ASSERT_EQ(system(("cd " + source_ + " && " + command).c_str()), 0) << command;
  }
  // What kubelet's atomic writer does for a new version of a volume: the
  // data in a new timestamped directory, `..data` switched to it by a
  // rename, links for new keys, the old directory and keys removed.
  void AtomicWrite(const std::string& version,
                   const std::vector<std::pair<std::string, std::string>>& keys) {
    std::string old;
    char buf[256];
    ssize_t n = readlink((source_ + "/..data").c_str(), buf, sizeof(buf));
    if (n > 0) old.assign(buf, n);
    Sh("mkdir " + version);
    for (const auto& [key, value] : keys) {
      std::ofstream(source_ + "/" + version + "/" + key) << value;
    }
    Sh("ln -s " + version + " ..data_tmp && mv -T ..data_tmp ..data");
    for (const auto& [key, value] : keys) Sh("ln -sfn ..data/" + key + " " + key);
    Sh("for k in *; do [ -e \"$k\" ] || rm \"$k\"; done");  // keys whose data is gone
    if (!old.empty()) Sh("rm -rf " + old);
  }

  std::string dir_, source_;
};

TEST_F(VolumesTest, ReadTreeListsAVolumeInOrderWithoutFollowingLinks) {
  AtomicWrite("..v1", {{"b", "2"}, {"a", std::string("\0\1", 2)}});
  Sh("chmod 0700 ..v1");
  auto tree = ReadTree(source_);
  ASSERT_TRUE(tree.ok()) << tree.status();
  std::vector<std::string> paths;
  for (const TreeEntry& e : *tree) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"", "..data", "..v1", "..v1/a", "..v1/b", "a", "b"}));
  EXPECT_EQ((*tree)[1].kind, TreeEntry::kLink);
  EXPECT_EQ((*tree)[1].data, "..v1");
  EXPECT_EQ((*tree)[2].mode, 0700u);
  EXPECT_EQ((*tree)[3].data, std::string("\0\1", 2));
  // What it came from and what a SYNC carries agree.
  agent::SyncRequest request{"/dev/vdb", "/.ember-binds/0", *tree}, back;
  std::string error;
  EXPECT_TRUE(agent::DecodeSync(agent::EncodeSync(request), &back, &error)) << error;
}

TEST_F(VolumesTest, ReadTreeRefusesWhatASyncCannotCarry) {
  Sh("mkfifo pipe");
  EXPECT_NE(ReadTree(source_).status().message().find("pipe: not a file, directory or symbolic"),
            std::string::npos);
  Sh("rm pipe && for i in $(seq 1024); do : > f$i; done");  // and the directory: 1025
  EXPECT_EQ(ReadTree(source_).status().code(), absl::StatusCode::kResourceExhausted);
  Sh("rm f* && : > f1 && truncate -s 3M big");
  EXPECT_EQ(ReadTree(source_).status().code(), absl::StatusCode::kResourceExhausted);
  Sh("truncate -s 1M big");
  EXPECT_TRUE(ReadTree(source_).ok());
}

// A read that overlaps a writer's steps is Unavailable, never half of one
// version: with a writer switching versions without pause, every tree read
// whole has `..data` pointing at a version directory in it, complete.
TEST_F(VolumesTest, ReadTreeNeverReturnsHalfAnUpdate) {
  constexpr int kKeys = 8;
  std::atomic<bool> stop{false};
  auto write_version = [&](int v) {
    std::string dir = source_ + "/..v" + std::to_string(v);
    mkdir(dir.c_str(), 0755);
    for (int k = 0; k < kKeys; ++k) std::ofstream(dir + "/k" + std::to_string(k)) << v;
    std::string tmp = source_ + "/..data_tmp";
    symlink(("..v" + std::to_string(v)).c_str(), tmp.c_str());
    rename(tmp.c_str(), (source_ + "/..data").c_str());
    std::string old = source_ + "/..v" + std::to_string(v - 1);
    for (int k = 0; k < kKeys; ++k) unlink((old + "/k" + std::to_string(k)).c_str());
    rmdir(old.c_str());
  };
  write_version(0);
  std::thread writer([&] {
    for (int v = 1; !stop; ++v) {
      write_version(v);
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // whole reads happen too
    }
  });
  int whole = 0, overlapped = 0;
  for (int i = 0; i < 1000; ++i) {
    auto tree = ReadTree(source_);
    if (absl::IsUnavailable(tree.status())) {
      ++overlapped;
      continue;
    }
    ASSERT_TRUE(tree.ok()) << tree.status();
    ++whole;
    std::string data;
    for (const TreeEntry& e : *tree) {
      if (e.path == "..data") data = e.data;
    }
    int keys = 0;
    for (const TreeEntry& e : *tree) {
      if (e.path.rfind(data + "/", 0) == 0) {
        EXPECT_EQ(e.data, data.substr(3)) << e.path;
        ++keys;
      }
    }
    EXPECT_EQ(keys, kKeys) << "..data -> " << data;
  }
  stop = true;
  writer.join();
  EXPECT_GT(whole, 0);
  std::printf("%d whole reads, %d overlapped a change\n", whole, overlapped);
}

TEST_F(VolumesTest, OnlyReadOnlyDirectoriesAreSynced) {
  Sh("mkdir -p ro rw big && : > file && truncate -s 3M big/f");
  MountPlan plan;
  std::vector<std::string> sources = {"ro", "rw", "file", "big"};
  for (size_t i = 0; i < sources.size(); ++i) {
    std::string copy = std::string(kBindsDir) + "/" + std::to_string(i);
    plan.copies.push_back({source_ + "/" + sources[i], copy});
    uint32_t flags = MS_BIND | (sources[i] == "rw" ? 0 : MS_RDONLY);
    plan.guest.push_back({"bind", copy, "/" + sources[i], flags, ""});
  }
  std::vector<std::string> skipped;
  auto volumes = VolumesToSync(plan, [&](const std::string& why) { skipped.push_back(why); });
  ASSERT_EQ(volumes.size(), 1u);
  EXPECT_EQ(volumes[0].source, source_ + "/ro");
  EXPECT_EQ(volumes[0].copy, std::string(kBindsDir) + "/0");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("the read-only bind mount at /big is a copy"), std::string::npos)
      << skipped[0];
}

// Stands in for the guest's agent: answers SYNCs by applying them to a
// directory of ours (the agent's own ApplyTree), refusing the first
// `refuse` of them.
class SyncingGuest {
 public:
  SyncingGuest(const std::string& socket, const std::string& copy, int refuse)
      : copy_(copy), refuse_(refuse) {
    listener_.reset(testing::ListenUnix(socket));
    thread_ = std::thread([this] { Serve(); });
  }
  ~SyncingGuest() {
    shutdown(listener_.get(), SHUT_RDWR);
    thread_.join();
  }
  int syncs() const { return syncs_; }
  std::string device() {
    std::lock_guard<std::mutex> lock(mutex_);
    return device_ + " " + top_;
  }

 private:
  void Serve() {
    while (true) {
      Fd conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) return;
      agent::FrameDecoder decoder(agent::FrameDecoder::From::kClient);
      agent::Frame frame{agent::Type::kHello, ""};
      std::string error;
      char buf[65536];
      while (frame.type != agent::Type::kSync) {
        auto result = decoder.Next(&frame, &error);
        if (result == agent::FrameDecoder::Result::kBad) break;
        if (result == agent::FrameDecoder::Result::kFrame) continue;
        ssize_t n = read(conn.get(), buf, sizeof(buf));
        if (n <= 0) break;
        decoder.Feed(std::string_view(buf, n));
      }
      agent::SyncRequest request;
      std::string answer = testing::AgentFrames({});
      Fd copy(open(copy_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (refuse_-- > 0 || !agent::DecodeSync(frame.payload, &request, &error) ||
          !agent::ApplyTree(copy.get(), request.entries, &error)) {
        agent::AppendFrame(&answer, agent::Type::kError,
                           agent::EncodeError(agent::ErrorKind::kOther, "refused " + error));
      } else {
        agent::AppendFrame(&answer, agent::Type::kSynced, "");
        std::lock_guard<std::mutex> lock(mutex_);
        device_ = request.device;
        top_ = request.top;
        ++syncs_;
      }
      (void)!send(conn.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
    }
  }

  std::string copy_;
  std::atomic<int> refuse_;
  std::atomic<int> syncs_{0};
  std::mutex mutex_;
  std::string device_, top_;
  Fd listener_;
  std::thread thread_;
};

template <typename F>
bool WaitFor(F done) {
  for (int i = 0; i < 200; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string Read(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

// The syncer as the monitor runs it, in a child; its warnings come
// through a pipe.
struct Syncer {
  pid_t pid = -1;
  Fd warnings;
  Syncer(const SyncedVolume& volume, const std::string& socket) {
    int warned[2];
    if (pipe2(warned, O_CLOEXEC) != 0) abort();
    pid = fork();
    if (pid == 0) {
      client::ExecOptions connection;
      connection.socket_path = socket;
      connection.through_vmm = false;
      connection.connect_wait_s = 5;
      connection.timeout_s = 5;
      RunVolumeSync({volume}, "/dev/vdb", connection, [&](const std::string& why) {
        (void)!write(warned[1], why.data(), why.size());
      });
    }
    close(warned[1]);
    warnings.reset(warned[0]);
  }
  ~Syncer() { Stop(); }
  std::string Stop() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
    std::string got;
    char buf[4096];
    ssize_t n;
    while (warnings.valid() && (n = read(warnings.get(), buf, sizeof(buf))) > 0) got.append(buf, n);
    return got;
  }
};

// Against a guest that refuses its first SYNC, from a copy older than the
// source: the copy catches up at once (a second later), then follows each
// version kubelet writes, old data gone.
TEST_F(VolumesTest, TheCopyFollowsAVolumesUpdates) {
  AtomicWrite("..v1", {{"token", "one"}});
  std::string copy = dir_ + "/copy", socket = dir_ + "/agent.sock";
  ASSERT_EQ(mkdir(copy.c_str(), 0755), 0);
  SyncingGuest guest(socket, copy, 1);
  Syncer syncer({source_, "/.ember-binds/0", {}}, socket);
  EXPECT_TRUE(WaitFor([&] { return Read(copy + "/token") == "one"; }));
  EXPECT_EQ(guest.device(), "/dev/vdb /.ember-binds/0");
  AtomicWrite("..v2", {{"token", "two"}, {"ca.crt", "cert"}});
  // A sync may come between the shell's steps, as a bind would show them.
  EXPECT_TRUE(WaitFor(
      [&] { return Read(copy + "/token") == "two" && Read(copy + "/ca.crt") == "cert"; }));
  AtomicWrite("..v3", {{"ca.crt", "cert2"}});
  auto gone = [&](const std::string& name) {
    struct stat st;
    return lstat((copy + "/" + name).c_str(), &st) != 0;
  };
  EXPECT_TRUE(WaitFor(
      [&] { return Read(copy + "/ca.crt") == "cert2" && gone("token") && gone("..v2"); }));
  char target[64] = {};
  EXPECT_GT(readlink((copy + "/..data").c_str(), target, sizeof(target) - 1), 0);
  EXPECT_STREQ(target, "..v3");
  // The write's last step (the old version's removal) may still bring one
  // sync: let them settle for a second and a half, then none may come. A
  // syncer that never settles fails here too.
  int before = -1;
  EXPECT_TRUE(WaitFor([&] {
    int now = guest.syncs();
    if (now == before) return true;
    before = now;
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return false;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(guest.syncs(), before) << "synced again without a change";
  EXPECT_NE(syncer.Stop().find("refused"), std::string::npos);
}

// A copy as new as the source is not sent again at the start (every
// Kubernetes container has its service account's volume).
TEST_F(VolumesTest, NothingIsSentUntilTheSourceChanges) {
  AtomicWrite("..v1", {{"token", "one"}});
  auto copied = ReadTree(source_);
  ASSERT_TRUE(copied.ok());
  std::string copy = dir_ + "/copy", socket = dir_ + "/agent.sock";
  ASSERT_EQ(mkdir(copy.c_str(), 0755), 0);
  SyncingGuest guest(socket, copy, 0);
  Syncer syncer({source_, "/.ember-binds/0", *copied}, socket);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(guest.syncs(), 0);
  AtomicWrite("..v2", {{"token", "two"}});
  EXPECT_TRUE(WaitFor([&] { return Read(copy + "/token") == "two"; }));
  EXPECT_EQ(syncer.Stop(), "");
}

}  // namespace
}  // namespace ember::oci
