#include "src/oci/state.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rapidjson/document.h>

#include <gtest/gtest.h>

namespace ember::oci {
namespace {

TEST(StateTest, RecordRoundTrips) {
  ContainerRecord r;
  r.id = "c1";
  r.bundle = "/b";
  r.rootfs = "/b/rootfs";
  r.created = "2026-12-01T22:11:55.535880233Z";
  r.monitor = {123, 456};
  r.vmm = {124, 457};
  r.started = true;
  r.jail_dir = "/srv/jailer/ember/c1";
  r.uds = "/srv/jailer/ember/c1/root/v.sock";
  r.annotations = {{"a", "b"}};
  r.sandbox = true;
  auto back = RecordFromJson(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, "c1");
  EXPECT_EQ(back->monitor.pid, 123);
  EXPECT_EQ(back->monitor.start_time, 456u);
  EXPECT_EQ(back->vmm.pid, 124);
  EXPECT_TRUE(back->started);
  EXPECT_EQ(back->jail_dir, r.jail_dir);
  EXPECT_EQ(back->uds, r.uds);
  EXPECT_EQ(back->annotations, r.annotations);
  EXPECT_TRUE(back->sandbox);
  r.sandbox = false;  // and a record from before the field is no sandbox
  std::string old = RecordToJson(r);
  const std::string field = R"(,"sandbox":false)";
  ASSERT_NE(old.find(field), std::string::npos);
  old.erase(old.find(field), field.size());
  EXPECT_FALSE(RecordFromJson(old)->sandbox);
  EXPECT_FALSE(RecordFromJson("{}").ok());
}

TEST(StateTest, OciStateHasTheSpecsFieldsAndNoPidOnceStopped) {
  ContainerRecord r;
  r.id = "c1";
  r.bundle = "/b";
  r.rootfs = "/b/rootfs";
  r.created = NowRfc3339();
  r.monitor = {4242, 1};
  rapidjson::Document doc;
  doc.Parse(OciStateJson(r, Status::kRunning).c_str());
  ASSERT_TRUE(doc.IsObject());
  EXPECT_STREQ(doc["ociVersion"].GetString(), kOciVersion);
  EXPECT_STREQ(doc["id"].GetString(), "c1");
  EXPECT_STREQ(doc["status"].GetString(), "running");
  EXPECT_EQ(doc["pid"].GetInt(), 4242);
  EXPECT_STREQ(doc["bundle"].GetString(), "/b");
  EXPECT_STREQ(doc["rootfs"].GetString(), "/b/rootfs");
  EXPECT_EQ(std::string(doc["created"].GetString()).size(), 30u);  // ...T..:..:..\.9 digitsZ
  doc.Parse(OciStateJson(r, Status::kStopped).c_str());
  EXPECT_EQ(doc["pid"].GetInt(), 0);
  EXPECT_STREQ(doc["status"].GetString(), "stopped");
}

TEST(StateTest, StatusFollowsTheMonitorAndItsStartTime) {
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  ContainerRecord r;
  r.monitor = RefOf(child);
  ASSERT_NE(r.monitor.start_time, 0u);
  EXPECT_EQ(StatusOf(r), Status::kCreated);
  r.started = true;
  EXPECT_EQ(StatusOf(r), Status::kRunning);
  // Another process with that pid (another start time) is not the monitor.
  ContainerRecord other = r;
  other.monitor.start_time += 1;
  EXPECT_EQ(StatusOf(other), Status::kStopped);
  kill(child, SIGKILL);
  // A zombie has exited: stopped before it is reaped.
  for (int i = 0; i < 100 && Alive(r.monitor); ++i) usleep(10000);
  EXPECT_EQ(StatusOf(r), Status::kStopped);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(StatusOf(r), Status::kStopped);
}

// `ps` and `kill --all` reach the exec'd processes' monitors that are
// still theirs: not one that has exited, nor a pid reused since.
TEST(StateTest, LiveExecsAreTheRecordedMonitorsStillRunning) {
  char tmpl[] = "/tmp/ember-oci-execs-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  pid_t running = fork();
  if (running == 0) {
    pause();
    _exit(0);
  }
  pid_t exited = fork();
  if (exited == 0) _exit(0);
  RecordExec(dir, RefOf(running));
  RecordExec(dir, RefOf(exited));
  ProcessRef reused = RefOf(getpid());
  reused.start_time += 1;  // the pid is alive, but another process's
  RecordExec(dir, reused);
  waitpid(exited, nullptr, 0);
  std::vector<ProcessRef> live = LiveExecs(dir);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].pid, running);
  kill(running, SIGKILL);
  waitpid(running, nullptr, 0);
  EXPECT_TRUE(LiveExecs(dir).empty());
  EXPECT_TRUE(LiveExecs(dir + "/missing").empty());
  std::system(("rm -rf " + dir).c_str());
}

TEST(StateTest, IdsAsRuncTakesThem) {
  EXPECT_TRUE(ValidId("abc-DEF_1.2+3"));
  EXPECT_FALSE(ValidId(""));
  EXPECT_FALSE(ValidId(".."));
  EXPECT_FALSE(ValidId("a/b"));
  EXPECT_FALSE(ValidId("a b"));
}

}  // namespace
}  // namespace ember::oci
