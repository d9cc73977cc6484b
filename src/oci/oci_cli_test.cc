// ember-oci's answers to bad input, from the binary itself, beside
// runc's: exit codes, and the message in the --log JSON.
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <functional>
#include <thread>

#include <rapidjson/document.h>

#include <gtest/gtest.h>

#include "src/agent/protocol.h"
#include "src/jail/cgroup.h"
#include "src/oci/cli_testing.h"
#include "src/oci/state.h"
#include "src/oci/vm.h"

namespace {

using namespace ember::oci::testing;

TEST_F(OciCliTest, BundleWithoutConfig) {
  Outcome o = Run("create --bundle " + bundle_ + " --pid-file " + dir_ + "/pid c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "ember-oci create failed: JSON specification file config.json not found");
  EXPECT_FALSE(access((root_ + "/c1").c_str(), F_OK) == 0) << "nothing is left behind";
}

TEST_F(OciCliTest, MissingRootPath) {
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["sh"]}, "root": {"path": "rootfs"}})";
  Outcome o = Run("create --bundle " + bundle_ + " c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "ember-oci create failed: invalid rootfs: stat " + bundle_ +
                           "/rootfs: No such file or directory");
}

TEST_F(OciCliTest, TerminalWithoutConsoleSocket) {
  mkdir((bundle_ + "/rootfs").c_str(), 0755);
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["sh"], "terminal": true}, "root": {"path": "rootfs"}})";
  Outcome o = Run("create --bundle " + bundle_ + " c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.log_msg.find("cannot allocate tty"), std::string::npos) << o.log_msg;
}

// A process too large for the guest agent fails `create`, not the start.
TEST_F(OciCliTest, ProcessTheAgentWouldRefuse) {
  mkdir((bundle_ + "/rootfs").c_str(), 0755);
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["sh"], "env": ["BIG=)" << std::string(5 << 20, 'x') << R"("]}, )"
      << R"("root": {"path": "rootfs"}})";
  Outcome o = Run("create --bundle " + bundle_ + " c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.log_msg.find("ember-oci create failed: the process's args, env and the "
                           "container's mounts take 524"),
            std::string::npos) << o.log_msg;
  EXPECT_NE(o.log_msg.find("bytes; the guest agent takes at most 4194304"), std::string::npos);
  EXPECT_FALSE(access((root_ + "/c1").c_str(), F_OK) == 0) << "nothing is left behind";
}

// As runc: a program the container does not have fails `create`.
TEST_F(OciCliTest, ProgramNotInTheRoot) {
  mkdir((bundle_ + "/rootfs").c_str(), 0755);
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["nope"]}, "root": {"path": "rootfs"}})";
  Outcome o = Run("create --bundle " + bundle_ + " c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "ember-oci create failed: unable to start container process: exec: "
                       "\"nope\": executable file not found in $PATH");
  EXPECT_FALSE(access((root_ + "/c1").c_str(), F_OK) == 0) << "nothing is left behind";
}

// A create killed before it recorded anything leaves a directory: runc's
// delete removes it (and --force makes that a success), so the id can be
// used again.
TEST_F(OciCliTest, DeleteRemovesAHalfMadeContainer) {
  mkdir(root_.c_str(), 0711);
  for (const char* id : {"c1", "c2"}) {
    mkdir((root_ + "/" + id).c_str(), 0700);
    std::ofstream(root_ + "/" + id + "/config.json") << "{}";
  }
  // The jail create made before it was killed (its image, as large as
  // the root file system).
  std::string jail = ember::oci::JailDir(ember::oci::FindAssets(), root_, "c1");
  ASSERT_FALSE(jail.empty());
  ASSERT_EQ(system(("mkdir -p " + jail + "/root && touch " + jail + "/root/root.ext4").c_str()), 0);
  Outcome o = Run("delete c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "container does not exist");
  EXPECT_NE(access((root_ + "/c1").c_str(), F_OK), 0);
  EXPECT_NE(access(jail.c_str(), F_OK), 0);
  EXPECT_NE(access((root_ + "/jail").c_str(), F_OK), 0) << "its empty parents too";
  EXPECT_EQ(Run("delete --force c2").status, 0);
  EXPECT_NE(access((root_ + "/c2").c_str(), F_OK), 0);
  EXPECT_EQ(Run("delete --force c3").status, 0) << "nothing there: no error with --force";
  // A record that does not parse may still name running processes: kept.
  mkdir((root_ + "/c4").c_str(), 0700);
  std::ofstream(root_ + "/c4/state.json") << "{garbled";
  EXPECT_EQ(Run("delete --force c4").status, 1);
  EXPECT_EQ(access((root_ + "/c4/state.json").c_str(), F_OK), 0);
}

TEST_F(OciCliTest, CreateOfAnIdThatExists) {
  mkdir((bundle_ + "/rootfs").c_str(), 0755);
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["sh"]}, "root": {"path": "rootfs"}})";
  mkdir(root_.c_str(), 0711);
  mkdir((root_ + "/c1").c_str(), 0700);
  Outcome o = Run("create --bundle " + bundle_ + " c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "ember-oci create failed: container with given ID already exists");
  EXPECT_EQ(access((root_ + "/c1").c_str(), F_OK), 0) << "the existing one is untouched";
}

TEST_F(OciCliTest, UnknownIdsCommandsAndFlags) {
  for (const char* cmd : {"start c9", "state c9", "kill c9 TERM", "delete c9", "ps c9"}) {
    Outcome o = Run(cmd);
    EXPECT_EQ(o.status, 1) << cmd;
    EXPECT_EQ(o.log_msg, "container does not exist") << cmd;
  }
  Outcome o = Run("frobnicate c1");
  EXPECT_EQ(o.status, 3);
  EXPECT_EQ(o.log_msg, "No help topic for 'frobnicate'");
  o = Run("state --bogus c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "flag provided but not defined: -bogus");
}

// Stands in for a VMM's API socket: answers each request with `status`
// and keeps what it was asked.
class FakeApi {
 public:
  FakeApi(const std::string& path, int status) : status_(status) {
    listener_ = ListenUnix(path);
    thread_ = std::thread([this] {
      int conn;
      while ((conn = accept(listener_, nullptr, nullptr)) >= 0) {
        std::string got;
        char buf[4096];
        ssize_t n;
        // One request: its headers and a body of at most a few bytes.
        while (got.find("}") == std::string::npos && (n = read(conn, buf, sizeof(buf))) > 0) {
          got.append(buf, n);
        }
        requests_.push_back(got.substr(0, got.find(' ', got.find(' ') + 1)) + " " +
                            got.substr(got.find('{')));
        std::string answer = "HTTP/1.1 " + std::to_string(status_) + " X\r\n" +
                             (status_ == 204 ? "\r\n" : "Content-Length: 2\r\n\r\n{}");
        (void)!send(conn, answer.data(), answer.size(), MSG_NOSIGNAL);
        close(conn);
      }
    });
  }
  ~FakeApi() {
    shutdown(listener_, SHUT_RDWR);
    thread_.join();
    close(listener_);
  }
  const std::vector<std::string>& requests() const { return requests_; }

 private:
  int status_;
  int listener_;
  std::thread thread_;
  std::vector<std::string> requests_;
};

// pause and resume as runc's, through the VMM's API (PATCH /vm): a
// container whose monitor is this test and whose VMM is a fake socket.
TEST_F(OciCliTest, PauseAndResumeGoThroughTheVmm) {
  RecordRunning([](ember::oci::ContainerRecord*) {});
  std::string api = root_ + "/c1/api.sock";  // ApiSocket without a jail
  auto status = [&] {
    rapidjson::Document doc;
    doc.Parse(Run("state c1").out.c_str());
    return doc.IsObject() ? std::string(doc["status"].GetString()) : "?";
  };
  {
    FakeApi vmm(api, 204);
    EXPECT_EQ(Run("resume c1").log_msg, "container not paused");
    EXPECT_EQ(Run("pause c1").status, 0);
    EXPECT_EQ(status(), "paused");
    EXPECT_EQ(Run("pause c1").log_msg, "container not running");
    EXPECT_EQ(Run("exec --process x c1").log_msg, "cannot exec in a paused container");
    EXPECT_EQ(Run("delete c1").log_msg, "cannot delete container c1 that is not stopped: paused");
    EXPECT_EQ(Run("resume c1").status, 0);
    EXPECT_EQ(status(), "running");
    EXPECT_EQ(vmm.requests(), (std::vector<std::string>{R"(PATCH /vm {"state":"Paused"})",
                                                        R"(PATCH /vm {"state":"Resumed"})"}));
  }
  unlink(api.c_str());
  FakeApi refusing(api, 400);
  Outcome o = Run("pause c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "cannot pause the microVM: it answered 400");
  EXPECT_EQ(status(), "running");
}

// As runc's: exec fails when the process cannot start, and otherwise
// returns once it runs (--detach) or with its status.
TEST_F(OciCliTest, ExecFailsWhenItsProcessCannotStart) {
  using ember::agent::Type;
  ember::oci::ContainerRecord r =
      RecordRunning([&](ember::oci::ContainerRecord* r) { r->uds = dir_ + "/v.sock"; });
  std::ofstream(dir_ + "/p.json") << R"({"args": ["nope"], "cwd": "/"})";
  std::string exec = "exec --process " + dir_ + "/p.json --pid-file " + dir_ + "/exec.pid ";
  {
    FakeGuest guest(r.uds, AgentFrames({{Type::kError, ember::agent::EncodeError(
        ember::agent::ErrorKind::kNotFound, "cannot run nope: No such file or directory")}}));
    Outcome o = Run(exec + "c1");
    EXPECT_EQ(o.status, 1);
    EXPECT_EQ(o.log_msg, "exec failed: cannot run nope: No such file or directory");
    EXPECT_NE(access((dir_ + "/exec.pid").c_str(), F_OK), 0);
  }
  unlink(r.uds.c_str());
  {
    FakeGuest guest(r.uds, AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)},
                                        {Type::kExit, ember::agent::EncodeExit({false, 7})}}));
    EXPECT_EQ(Run(exec + "c1").status, 7);
    EXPECT_EQ(access((dir_ + "/exec.pid").c_str(), F_OK), 0);
  }
  unlink(r.uds.c_str());
  {
    FakeGuest guest(r.uds, AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)}}));
    EXPECT_EQ(Run(exec + "--detach c1").status, 0) << "returns once the process runs";
    // Its monitor waits for an EXIT that this guest never sends.
    kill(std::stoi(FirstLine(dir_ + "/exec.pid")), SIGKILL);
  }
}


// As runc's, exec takes a created container too: its request then makes
// the container's root as the init's will (config.json's mounts, host
// name, read-only root); once started, the root is there and an exec's
// request carries none of it.
TEST_F(OciCliTest, ExecBeforeStartMakesTheRootAsTheInitWill) {
  using ember::agent::Type;
  mkdir((bundle_ + "/rootfs").c_str(), 0755);
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["sh"]}, "root": {"path": "rootfs", "readonly": true},)"
      << R"( "hostname": "box", "mounts": [{"destination": "/scratch", "type": "tmpfs",)"
      << R"( "source": "tmpfs", "options": ["size=1m"]}]})";
  ember::oci::ContainerRecord r = RecordRunning([&](ember::oci::ContainerRecord* r) {
    r->uds = dir_ + "/v.sock";
    r->bundle = bundle_;
    r->started = false;
  });
  std::ofstream(dir_ + "/p.json") << R"({"args": ["true"], "cwd": "/"})";
  auto exec_request = [&] {
    FakeGuest guest(r.uds, AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)},
                                        {Type::kExit, ember::agent::EncodeExit({false, 0})}}));
    EXPECT_EQ(Run("exec --process " + dir_ + "/p.json c1").status, 0);
    ember::agent::ExecRequest request = ExecIn(guest.Received());
    unlink(r.uds.c_str());
    return request;
  };
  ember::agent::ExecRequest before = exec_request();
  EXPECT_EQ(before.argv, std::vector<std::string>{"true"});
  EXPECT_EQ(before.container.hostname, "box");
  EXPECT_TRUE(before.container.root_readonly);
  ASSERT_EQ(before.container.mounts.size(), 1u);
  EXPECT_EQ(before.container.mounts[0].target, "/scratch");
  EXPECT_FALSE(before.flags & ember::agent::ExecRequest::kFlagInit);
  EXPECT_FALSE(before.container.has_network);
  r.started = true;
  std::ofstream(root_ + "/c1/state.json") << ember::oci::RecordToJson(r);
  ember::agent::ExecRequest after = exec_request();
  EXPECT_TRUE(after.container.mounts.empty());
  EXPECT_EQ(after.container.hostname, "");
}

// Commands that change a record wait for each other: a pause while a
// start runs its hooks is not lost to start's write.
TEST_F(OciCliTest, RecordChangesWaitForEachOther) {
  RecordRunning([](ember::oci::ContainerRecord*) {});
  std::string api = root_ + "/c1/api.sock";  // ApiSocket without a jail
  FakeApi vmm(api, 204);
  int held = open((root_ + "/c1/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_EQ(flock(held, LOCK_EX), 0);
  pid_t pause = fork();
  if (pause == 0) {
    execl(EMBER_OCI_BIN, EMBER_OCI_BIN, "--root", root_.c_str(), "pause", "c1", nullptr);
    _exit(127);
  }
  usleep(500 * 1000);
  int status;
  EXPECT_EQ(waitpid(pause, &status, WNOHANG), 0) << "pause went ahead of the holder";
  EXPECT_TRUE(vmm.requests().empty());
  close(held);
  ASSERT_EQ(waitpid(pause, &status, 0), pause);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(vmm.requests().size(), 1u);
}

// runc's update as go-runc sends it (--resources -, a LinuxResources
// object on stdin), into the container's cgroup; -1 lifts a limit again.
TEST_F(OciCliTest, UpdateWritesTheContainersCgroup) {
  if (ember::jail::HostCgroupVersion() != 1) GTEST_SKIP() << "written for cgroup v1 hosts";
  std::string relative = "ember-oci-test-" + std::to_string(getpid());
  std::string pids = "/sys/fs/cgroup/pids/" + relative;
  std::string memory = "/sys/fs/cgroup/memory/" + relative;
  if (mkdir(pids.c_str(), 0755) != 0) GTEST_SKIP() << "cannot make a cgroup here";
  mkdir(memory.c_str(), 0755);
  RecordRunning([&](ember::oci::ContainerRecord* r) {
    r->cgroup = relative;
    r->cgroup_version = 1;
  });
  std::ofstream(dir_ + "/limits.json")
      << R"({"memory": {"limit": 268435456}, "pids": {"limit": 42}})";
  Outcome o = Run("update --resources - c1 < " + dir_ + "/limits.json");
  EXPECT_EQ(o.status, 0) << o.log_msg;
  EXPECT_EQ(FirstLine(pids + "/pids.max"), "42");
  EXPECT_EQ(FirstLine(memory + "/memory.limit_in_bytes"), "268435456");
  std::ofstream(dir_ + "/none.json") << R"({"memory": {"limit": -1}, "pids": {"limit": -1}})";
  EXPECT_EQ(Run("update --resources " + dir_ + "/none.json c1").status, 0);
  EXPECT_EQ(FirstLine(pids + "/pids.max"), "max");
  EXPECT_NE(FirstLine(memory + "/memory.limit_in_bytes"), "268435456");
  std::ofstream(dir_ + "/bad.json") << R"({"pids": {"limit": "many"}})";
  o = Run("update --resources " + dir_ + "/bad.json c1");
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.log_msg, "resources.pids: limit must be an integer");
  rmdir(pids.c_str());
  rmdir(memory.c_str());
}

// An exec'd process's monitor is in the container's cgroup, as runc's
// exec'd process is.
TEST_F(OciCliTest, ExecJoinsTheContainersCgroup) {
  if (ember::jail::HostCgroupVersion() != 1) GTEST_SKIP() << "written for cgroup v1 hosts";
  std::string relative = "ember-oci-exec-" + std::to_string(getpid());
  std::string pids = "/sys/fs/cgroup/pids/" + relative;
  if (mkdir(pids.c_str(), 0755) != 0) GTEST_SKIP() << "cannot make a cgroup here";
  ember::oci::ContainerRecord r = RecordRunning([&](ember::oci::ContainerRecord* r) {
    r->uds = dir_ + "/v.sock";
    r->cgroup = relative;
    r->cgroup_version = 1;
  });
  std::ofstream(dir_ + "/p.json") << R"({"args": ["true"], "cwd": "/"})";
  std::string cgroups;
  {
    using ember::agent::Type;
    FakeGuest guest(r.uds, AgentFrames({{Type::kStarted, ember::agent::EncodeU32(7)},
                                        {Type::kExit, ember::agent::EncodeExit({false, 0})}}),
                    [&](int conn) {
                      ucred peer{};
                      socklen_t len = sizeof(peer);
                      getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len);
                      std::stringstream text;
                      text << std::ifstream("/proc/" + std::to_string(peer.pid) + "/cgroup").rdbuf();
                      cgroups = text.str();
                    });
    EXPECT_EQ(Run("exec --process " + dir_ + "/p.json c1").status, 0);
  }
  EXPECT_NE(cgroups.find(":pids:/" + relative + "\n"), std::string::npos) << cgroups;
  // Other controllers' copies were made by the join; all go.
  for (const char* c : {"cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
                        "hugetlb"}) {
    rmdir(("/sys/fs/cgroup/" + std::string(c) + "/" + relative).c_str());
  }
}

// The text log quotes as logrus does, so that a quote in a message
// cannot end its msg field.
TEST_F(OciCliTest, TextLogQuotesItsMessages) {
  std::string log = dir_ + "/log.txt";
  std::string cmd = std::string(EMBER_OCI_BIN) + " --root " + root_ + " --log " + log +
                    " --log-format 'a\"b' state c1 2>/dev/null";
  EXPECT_NE(system(cmd.c_str()), 0);
  std::string line = FirstLine(log);
  EXPECT_NE(line.find(R"( level=error msg="invalid log-format: a\"b")"), std::string::npos) << line;
}

TEST_F(OciCliTest, VersionAndFeatures) {
  Outcome o = Run("--version");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.out.rfind("ember-oci version ", 0), 0u) << o.out;
  o = Run("features");
  EXPECT_EQ(o.status, 0);
  rapidjson::Document doc;
  doc.Parse(o.out.c_str());
  ASSERT_TRUE(doc.IsObject()) << o.out;
  EXPECT_STREQ(doc["ociVersionMin"].GetString(), "1.0.0");
  ASSERT_TRUE(doc["hooks"].IsArray());
  EXPECT_EQ(doc["hooks"].Size(), 6u) << o.out;
  EXPECT_TRUE(doc["linux"]["cgroup"]["v2"].GetBool());
}

// go-runc's List reads --format json: an array, never the table.
TEST_F(OciCliTest, ListAsJson) {
  Outcome o = Run("list --format json");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.out, "[]\n");
  o = Run("list -q");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.out, "");
  EXPECT_EQ(Run("list --format yaml").status, 1);
}

}  // namespace
