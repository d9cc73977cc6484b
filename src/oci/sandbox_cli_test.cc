// A Kubernetes pod's sandbox, from the binary: no microVM, a monitor that
// stands where pause would (runc's lifecycle: created, running, paused,
// stopped by SIGTERM with 0 or by SIGKILL).
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

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
  // A sandbox as containerd's CRI marks one: its type, and its own id as
  // the sandbox's (`sandbox_id`).
  int CreateSandbox(const std::string& id, const std::string& sandbox_id = "") {
    std::ofstream(bundle_ + "/config.json")
        << R"({"process": {"args": ["/bin/server"]}, "root": {"path": "rootfs"},)"
        << R"( "annotations": {"io.kubernetes.cri.container-type": "sandbox",)"
        << R"( "io.kubernetes.cri.sandbox-id": ")" << (sandbox_id.empty() ? id : sandbox_id)
        << R"("}})";
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

// A failing poststart or poststop hook is a warning: the command still
// succeeds and the hooks after it still run (the runtime spec's rule).
TEST_F(OciSandboxTest, FailingPoststartAndPoststopHooksLeaveTheRestToRun) {
  if (geteuid() != 0) GTEST_SKIP() << "a network namespace of its own needs root";
  std::string ran = dir_ + "/ran";
  auto hook = [&](const std::string& script) {
    return R"({"path": "/bin/sh", "args": ["sh", "-c", ")" + script + R"("]})";
  };
  auto phase = [&](const std::string& name) {
    return "\"" + name + "\": [" + hook("echo " + name + " broken; exit 4") + ", " +
           hook("echo " + name + " >> " + ran) + "]";
  };
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"args": ["/bin/server"]}, "root": {"path": "rootfs"},)"
      << R"( "hooks": {)" << phase("poststart") << ", " << phase("poststop") << "},"
      << R"( "annotations": {"io.kubernetes.cri.container-type": "sandbox",)"
      << R"( "io.kubernetes.cri.sandbox-id": "pod"}})";
  ASSERT_EQ(Run("create --bundle " + bundle_ + " --pid-file " + dir_ + "/pod.pid pod").status, 0);
  pid_t monitor = Monitor("pod").pid;
  Outcome started = Run("start pod");
  EXPECT_EQ(started.status, 0);
  EXPECT_NE(started.log_msg.find("poststart hook /bin/sh exited 4: poststart broken"),
            std::string::npos)
      << started.log_msg;
  ASSERT_EQ(Run("kill pod KILL").status, 0);
  WaitStatus(monitor);
  Outcome deleted = Run("delete pod");
  EXPECT_EQ(deleted.status, 0);
  EXPECT_NE(deleted.log_msg.find("poststop hook /bin/sh exited 4"), std::string::npos)
      << deleted.log_msg;
  std::stringstream lines;
  lines << std::ifstream(ran).rdbuf();
  EXPECT_EQ(lines.str(), "poststart\npoststop\n");
}

// With a terminal (never from CRI, but `ctr run -t` can ask), create's own
// output ends when create does: the shim reads it until EOF when it gave
// no stdio, so a monitor holding it would hold up create.
TEST_F(OciSandboxTest, CreatesOutputEndsWithATerminal) {
  if (geteuid() != 0) GTEST_SKIP() << "a network namespace of its own needs root";
  std::string socket = dir_ + "/console.sock";
  int listener = ListenUnix(socket);
  std::thread console([listener] {
    int conn = accept(listener, nullptr, nullptr);
    char byte, control[CMSG_SPACE(sizeof(int))];
    iovec io{&byte, 1};
    msghdr msg{};
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    if (recvmsg(conn, &msg, 0) >= 0 && CMSG_FIRSTHDR(&msg)) {
      int master;
      memcpy(&master, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(master));
      close(master);
    }
    close(conn);
  });
  std::ofstream(bundle_ + "/config.json")
      << R"({"process": {"terminal": true, "args": ["/bin/server"]}, "root": {"path": "rootfs"},)"
      << R"( "annotations": {"io.kubernetes.cri.container-type": "sandbox",)"
      << R"( "io.kubernetes.cri.sandbox-id": "pod"}})";
  FILE* out = popen((std::string(EMBER_OCI_BIN) + " --root " + root_ + " create --bundle " +
                     bundle_ + " --console-socket " + socket + " --pid-file " + dir_ +
                     "/pod.pid pod 2>&1")
                        .c_str(),
                    "r");
  ASSERT_NE(out, nullptr);
  bool ended = false;
  for (int i = 0; i < 100 && !ended; ++i) {
    pollfd p{fileno(out), POLLIN, 0};
    char buf[256];
    ended = poll(&p, 1, 100) > 0 && read(fileno(out), buf, sizeof(buf)) == 0;
  }
  EXPECT_TRUE(ended) << "create's output held open";
  if (!ended) StopMonitors();
  EXPECT_EQ(WEXITSTATUS(pclose(out)), 0);
  console.join();
  close(listener);
  EXPECT_EQ(Run("delete --force pod").status, 0);
}

// Before `start` a signal acts on the monitor as on runc's waiting init.
TEST_F(OciSandboxTest, ASignalBeforeStartEndsItAsRuncsInit) {
  if (geteuid() != 0) GTEST_SKIP() << "a network namespace of its own needs root";
  ASSERT_EQ(CreateSandbox("pod"), 0);
  pid_t monitor = Monitor("pod").pid;
  ASSERT_EQ(Run("kill pod TERM").status, 0);
  EXPECT_EQ(WaitStatus(monitor), 128 + SIGTERM);
  EXPECT_EQ(Run("delete pod").status, 0);
}

// The type annotation alone (a user's `ctr run --annotation`) is not a
// sandbox: the container gets its microVM.
TEST_F(OciSandboxTest, TheTypeAloneIsNotASandbox) {
  if (geteuid() != 0) GTEST_SKIP() << "the VM's TAP needs root";
  ASSERT_EQ(CreateSandbox("app", "some-pod"), 0);
  for (int i = 0; i < 100 && access((root_ + "/app/console.log").c_str(), F_OK) != 0; ++i) {
    usleep(50 * 1000);
  }
  EXPECT_EQ(access((root_ + "/app/console.log").c_str(), F_OK), 0) << "no VMM started";
  EXPECT_EQ(Run("delete --force app").status, 0);
}

}  // namespace
