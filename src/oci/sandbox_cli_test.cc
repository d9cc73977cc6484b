// A Kubernetes pod's sandbox, from the binary: no microVM, a monitor that
// stands where pause would (runc's lifecycle: created, running, paused,
// stopped by SIGTERM with 0 or by SIGKILL).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "src/oci/cli_testing.h"

namespace {

using namespace ember::oci::testing;

class OciSandboxTest : public OciFakeVmTest {
 protected:
  void SetUp() override {
    OciFakeVmTest::SetUp();
    // The monitor, orphaned when create exits, is ours to reap (as the
    // shim's): its exit status is the sandbox's.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
  }
  void TearDown() override {
    OciFakeVmTest::TearDown();
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
  int CreateSandbox(const std::string& id) {
    std::ofstream(bundle_ + "/config.json")
        << R"({"process": {"args": ["/bin/server"]}, "root": {"path": "rootfs"},)"
        << R"( "annotations": {"io.kubernetes.cri.container-type": "sandbox"}})";
    return Run("create --bundle " + bundle_ + " --pid-file " + dir_ + "/" + id + ".pid " + id)
        .status;
  }
  std::string StatusOf(const std::string& id) {
    Outcome o = Run("state " + id);
    rapidjson::Document doc;
    doc.Parse(o.out.c_str());
    return doc.IsObject() && doc.HasMember("status") ? doc["status"].GetString() : "";
  }
  int WaitStatus(pid_t pid) {
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
  }
};

TEST_F(OciSandboxTest, ASandboxRunsNoMicroVmAndEndsAsPauseDoes) {
  if (geteuid() != 0) GTEST_SKIP() << "a network namespace of its own needs root";
  ASSERT_EQ(CreateSandbox("pod"), 0);
  pid_t monitor = Monitor("pod").pid;
  EXPECT_EQ(StatusOf("pod"), "created");
  EXPECT_NE(access((root_ + "/pod/console.log").c_str(), F_OK), 0) << "a VMM was started";
  ASSERT_EQ(Run("start pod").status, 0);
  EXPECT_EQ(StatusOf("pod"), "running");
  ASSERT_EQ(Run("pause pod").status, 0);
  EXPECT_EQ(StatusOf("pod"), "paused");
  ASSERT_EQ(Run("resume pod").status, 0);
  EXPECT_EQ(StatusOf("pod"), "running");
  Outcome exec = Run("exec --process /dev/null pod");
  EXPECT_EQ(exec.status, 1);
  EXPECT_NE(exec.log_msg.find("cannot exec in a pod's sandbox"), std::string::npos)
      << exec.log_msg;
  ASSERT_EQ(Run("kill pod TERM").status, 0);
  EXPECT_EQ(WaitStatus(monitor), 0);
  EXPECT_EQ(StatusOf("pod"), "stopped");
  EXPECT_EQ(Run("delete pod").status, 0);

  ASSERT_EQ(CreateSandbox("pod2"), 0);
  monitor = Monitor("pod2").pid;
  ASSERT_EQ(Run("start pod2").status, 0);
  ASSERT_EQ(Run("kill pod2 KILL").status, 0);
  EXPECT_EQ(WaitStatus(monitor), 128 + SIGKILL);
  EXPECT_EQ(Run("delete pod2").status, 0);
}

}  // namespace
