#include "src/oci/request.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "src/oci/testing.h"
#include "src/oci/vm.h"

namespace ember::oci {
namespace {

ProcessSpec Shell() {
  ProcessSpec p;
  p.args = {"sh", "-c", "true"};
  p.env = {"PATH=/bin"};
  return p;
}

TEST(RequestTest, CarriesTheProcess) {
  ProcessSpec p = Shell();
  p.terminal = true;
  p.cwd = "/work";
  p.uid = 1000;
  p.gid = 100;
  p.additional_gids = {10};
  agent::ExecRequest r = ContainerRequest(p, "box");
  EXPECT_EQ(r.flags, agent::ExecRequest::kFlagStdin | agent::ExecRequest::kFlagContainer |
                         agent::ExecRequest::kFlagTty);
  EXPECT_EQ(r.argv, p.args);
  EXPECT_EQ(r.env, p.env);
  EXPECT_EQ(r.cwd, "/work");
  EXPECT_EQ(r.container.uid, 1000u);
  EXPECT_EQ(r.container.groups, std::vector<uint32_t>{10});
  EXPECT_EQ(r.container.root_device, kContainerDevice);
  EXPECT_EQ(r.container.root_dir, kContainerRootDir);
  EXPECT_EQ(r.container.hostname, "box");
  EXPECT_TRUE(CheckRequest(r).ok());
  std::string error;
  agent::ExecRequest back;
  EXPECT_TRUE(agent::DecodeExec(agent::EncodeExec(r), &back, &error)) << error;
}

// Kubernetes gives every container a few variables per service in its
// namespace: a thousand services make an environment of hundreds of KiB,
// which one 64 KiB frame could not carry.
TEST(RequestTest, TakesAnEnvironmentOfHundredsOfKilobytes) {
  ProcessSpec p = Shell();
  for (int i = 0; i < 7000; ++i) {
    p.env.push_back("SERVICE_" + std::to_string(i) + "_PORT_8080_TCP_ADDR=10.96.12.34");
  }
  agent::ExecRequest r = ContainerRequest(p, "");
  std::string payload = agent::EncodeExec(r);
  ASSERT_GT(payload.size(), 300u * 1024);
  EXPECT_TRUE(CheckRequest(r).ok());
  std::string wire;
  agent::AppendFrame(&wire, agent::Type::kExec, payload);
  agent::FrameDecoder decoder;
  decoder.Feed(wire);
  agent::Frame frame;
  std::string error;
  ASSERT_EQ(decoder.Next(&frame, &error), agent::FrameDecoder::Result::kFrame) << error;
  agent::ExecRequest back;
  ASSERT_TRUE(agent::DecodeExec(frame.payload, &back, &error)) << error;
  EXPECT_EQ(back.env, p.env);
}

TEST(RequestTest, RefusesWhatTheAgentCannotTake) {
  ProcessSpec big = Shell();
  big.env.push_back("HUGE=" + std::string(agent::kMaxExecPayload, 'x'));
  absl::Status s = CheckRequest(ContainerRequest(big, ""));
  EXPECT_NE(s.message().find("the guest agent takes at most 4194304"), absl::string_view::npos)
      << s;

  ProcessSpec nul = Shell();
  nul.args[2] = std::string("tr\0ue", 5);
  s = CheckRequest(ContainerRequest(nul, ""));
  EXPECT_NE(s.message().find("malformed EXEC request"), absl::string_view::npos) << s;

  ProcessSpec no_name = Shell();
  no_name.env.push_back("=value");
  s = CheckRequest(ContainerRequest(no_name, ""));
  EXPECT_NE(s.message().find("environment entry without NAME=: =value"),
            absl::string_view::npos) << s;
}

// A root file system laid out as images have them: /bin a relative link
// to usr/bin, sh an absolute link to busybox (which the host need not have).
class FindProgramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* d : {"/usr", "/usr/bin", "/app", "/custom", "/usr/local", "/usr/local/bin"}) {
      mkdir((root() + d).c_str(), 0755);
    }
    for (const char* f : {"/usr/bin/busybox", "/usr/bin/tool", "/app/run", "/custom/x"}) {
      std::ofstream(root() + f) << "#!/bin/true\n";
      chmod((root() + f).c_str(), 0755);
    }
    mkdir((root() + "/usr/bin/adir").c_str(), 0755);
    symlink("usr/bin", (root() + "/bin").c_str());
    symlink("/bin/busybox", (root() + "/usr/bin/sh").c_str());
    symlink("/data/vol", (root() + "/usr/local/bin/vol").c_str());
    symlink("loop2", (root() + "/usr/bin/loop1").c_str());
    symlink("loop1", (root() + "/usr/bin/loop2").c_str());
  }
  const std::string& root() const { return dir_.path(); }

  absl::Status Find(std::vector<std::string> argv, std::vector<std::string> env = {},
                    std::string cwd = "/", std::vector<agent::MountSpec> mounts = {}) {
    ProcessSpec p;
    p.args = std::move(argv);
    p.env = std::move(env);
    p.cwd = std::move(cwd);
    return FindProgram(ContainerRequest(p, "", std::move(mounts)), root());
  }

 private:
  testing::TempDir dir_;
};

TEST_F(FindProgramTest, FindsWhatTheGuestWillRun) {
  EXPECT_TRUE(Find({"tool"}).ok());
  EXPECT_TRUE(Find({"/bin/tool"}).ok());
  EXPECT_TRUE(Find({"sh", "-c", "true"}).ok()) << "links resolve inside the root";
  EXPECT_TRUE(Find({"/bin/sh"}).ok());
  EXPECT_TRUE(Find({"./run"}, {}, "/app").ok());
  EXPECT_TRUE(Find({"../app/run"}, {}, "/custom").ok());
  EXPECT_TRUE(Find({"x"}, {"PATH=/custom"}).ok());
}

TEST_F(FindProgramTest, RefusesWithRuncsMessage) {
  absl::Status s = Find({"nope"});
  EXPECT_EQ(s.message(), "unable to start container process: exec: \"nope\": executable file "
                         "not found in $PATH");
  s = Find({"/bin/nope"});
  EXPECT_EQ(s.message(), "unable to start container process: exec: \"/bin/nope\": stat "
                         "/bin/nope: no such file or directory");
  EXPECT_FALSE(Find({"tool"}, {"PATH=/custom"}).ok()) << "the process's own PATH";
  EXPECT_FALSE(Find({"adir"}).ok()) << "a directory";
  EXPECT_FALSE(Find({"loop1"}).ok()) << "a loop of links";
  EXPECT_FALSE(Find({"/../../usr/bin/../../etc/nope"}).ok());
}

// What a mount will put there is not in the root on the host.
TEST_F(FindProgramTest, LeavesWhatAMountProvides) {
  agent::MountSpec data{"bind", "/.ember-binds/0", "/data", 0, ""};
  EXPECT_TRUE(Find({"vol"}, {}, "/", {data}).ok()) << "a link into a mount";
  EXPECT_FALSE(Find({"vol"}).ok());
  agent::MountSpec opt{"bind", "/.ember-binds/1", "/opt/tools", 0, ""};
  EXPECT_TRUE(Find({"/opt/tools/bin/run"}, {}, "/", {opt}).ok());
  EXPECT_TRUE(Find({"/dev/fd/3"}).ok()) << "the agent's own /dev";
  // A target through a link (/bin is usr/bin): the agent mounts from inside
  // the root, so the mount is at /usr/bin/tool2, whichever way it is named.
  agent::MountSpec via_link{"bind", "/.ember-binds/2", "/bin/tool2", 0, ""};
  EXPECT_TRUE(Find({"/bin/tool2"}, {}, "/", {via_link}).ok());
  EXPECT_TRUE(Find({"/usr/bin/tool2"}, {}, "/", {via_link}).ok());
  EXPECT_TRUE(Find({"tool2"}, {}, "/", {via_link}).ok());
  EXPECT_FALSE(Find({"tool2"}).ok());
}

}  // namespace
}  // namespace ember::oci
