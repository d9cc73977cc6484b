#include "src/oci/spec.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>

#include <gtest/gtest.h>

namespace ember::oci {
namespace {

constexpr char kConfig[] = R"({
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": true,
    "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]},
    "args": ["sh", "-c", "echo hi"],
    "env": ["PATH=/bin", "TERM=xterm", "EMPTY"],
    "cwd": "/work",
    "capabilities": {"bounding": ["CAP_KILL"]},
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "box",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
  "annotations": {"io.ember.vcpus": "2", "io.ember.mem_mib": "256", "other": "x"},
  "linux": {"namespaces": [{"type": "pid"}]}
})";

TEST(SpecTest, ReadsWhatAProcessInAMicroVmUses) {
  auto spec = ParseBundleConfig(kConfig, "/b");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->oci_version, "1.0.2-dev");
  EXPECT_TRUE(spec->process.terminal);
  EXPECT_EQ(spec->process.args, (std::vector<std::string>{"sh", "-c", "echo hi"}));
  EXPECT_EQ(spec->process.env, (std::vector<std::string>{"PATH=/bin", "TERM=xterm", "EMPTY="}));
  EXPECT_EQ(spec->process.cwd, "/work");
  EXPECT_EQ(spec->process.uid, 1000u);
  EXPECT_EQ(spec->process.gid, 100u);
  EXPECT_EQ(spec->process.additional_gids, (std::vector<uint32_t>{10, 20}));
  EXPECT_EQ(spec->root_path, "/b/rootfs");
  EXPECT_TRUE(spec->root_readonly);
  EXPECT_EQ(spec->hostname, "box");
  EXPECT_EQ(spec->vm.vcpus, 2u);
  EXPECT_EQ(spec->vm.mem_mib, 256u);
  EXPECT_EQ(spec->annotations.at("other"), "x");
}

TEST(SpecTest, DefaultsAndAnAbsoluteRoot) {
  auto spec = ParseBundleConfig(R"({"process": {"args": ["true"]}, "root": {"path": "/r"}})", "/b");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->process.terminal);
  EXPECT_EQ(spec->process.cwd, "/");
  EXPECT_EQ(spec->process.uid, 0u);
  EXPECT_EQ(spec->root_path, "/r");
  EXPECT_EQ(spec->vm.vcpus, VmSize::kDefaultVcpus);
  EXPECT_EQ(spec->vm.mem_mib, VmSize::kDefaultMemMib);
}

TEST(SpecTest, RefusesWhatCannotRun) {
  for (const char* bad : {
           R"({"root": {"path": "r"}})",
           R"({"process": {"args": []}, "root": {"path": "r"}})",
           R"({"process": {"args": ["x"], "cwd": "rel"}, "root": {"path": "r"}})",
           R"({"process": {"args": ["x"], "user": {"uid": -1}}, "root": {"path": "r"}})",
           R"({"process": {"args": ["x"], "env": ["=x"]}, "root": {"path": "r"}})",
           R"({"process": {"args": ["x"]}})",
           R"({"process": {"args": ["x"]}, "root": {"path": "r"},
               "annotations": {"io.ember.vcpus": "0"}})",
           R"({"process": {"args": ["x"]}, "root": {"path": "r"},
               "annotations": {"io.ember.mem_mib": "lots"}})",
           "not json",
       }) {
    EXPECT_FALSE(ParseBundleConfig(bad, "/b").ok()) << bad;
  }
}

TEST(SpecTest, ExecProcessFile) {
  auto p = ParseProcess(R"({"args": ["ls"], "env": ["A=1"], "cwd": "/", "terminal": false})",
                        "process");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->args, std::vector<std::string>{"ls"});
  EXPECT_FALSE(ParseProcess(R"({"args": "ls"})", "process").ok());
}

TEST(SpecTest, LoadBundleSaysWhatIsMissingAsRuncDoes) {
  char tmpl[] = "/tmp/ember-oci-spec-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  auto spec = LoadBundle(dir);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().message(), "JSON specification file config.json not found");
  std::ofstream(dir + "/config.json") << R"({"process": {"args": ["x"]}, "root": {"path": "rootfs"}})";
  spec = LoadBundle(dir);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().message(),
            "invalid rootfs: stat " + dir + "/rootfs: No such file or directory");
  mkdir((dir + "/rootfs").c_str(), 0755);
  EXPECT_TRUE(LoadBundle(dir).ok());
  (void)!system(("rm -rf " + dir).c_str());
}

// containerd's default capabilities: Docker's well-known mask.
TEST(SpecTest, CapabilitiesBecomeMasks) {
  auto p = ParseProcess(R"({"args": ["sh"], "noNewPrivileges": true, "capabilities": {
      "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                   "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                   "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
                   "CAP_NOT_A_THING"],
      "ambient": ["CAP_CHECKPOINT_RESTORE"]}})",
                        "process");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->has_capabilities);
  EXPECT_TRUE(p->no_new_privileges);
  EXPECT_EQ(p->cap_bounding, 0xa80425fbu) << "an unknown name is left out, as runc does";
  EXPECT_EQ(p->cap_effective, 0u);
  EXPECT_EQ(p->cap_ambient, uint64_t{1} << 40);
  auto none = ParseProcess(R"({"args": ["sh"]})", "process");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_capabilities) << "without the object the agent's stay";
  EXPECT_FALSE(ParseProcess(R"({"args": ["sh"], "capabilities": []})", "process").ok());
}

TEST(SpecTest, RlimitsByNameAsRuncTakesThem) {
  auto p = ParseProcess(R"({"args": ["sh"], "rlimits": [
      {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
      {"type": "RLIMIT_NPROC", "soft": 10, "hard": 10},
      {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 2048}]})", "process");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->rlimits.size(), 2u) << "a later entry replaces an earlier one";
  EXPECT_EQ(p->rlimits[0].resource, 7u);
  EXPECT_EQ(p->rlimits[0].soft, 2048u);
  EXPECT_EQ(p->rlimits[1].resource, 6u);
  for (auto [bad, message] : {
           std::pair{R"([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}])",
                     "process: rlimits: unknown type RLIMIT_BOGUS"},
           {R"([{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}])",
            "process: rlimits: RLIMIT_CORE's soft limit is above its hard limit"},
           {R"([{"type": "RLIMIT_CORE", "soft": -1, "hard": 1}])",
            "process: rlimits[] must be objects with a type, soft and hard"}}) {
    auto q = ParseProcess(std::string(R"({"args": ["sh"], "rlimits": )") + bad + "}", "process");
    ASSERT_FALSE(q.ok()) << bad;
    EXPECT_EQ(q.status().message(), message);
  }
}

TEST(SpecTest, OomScoreAdjIsTakenInItsRange) {
  auto p = ParseProcess(R"({"args": ["sh"], "oomScoreAdj": -998})", "process");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->oom_score_adj, -998);
  EXPECT_FALSE(ParseProcess(R"({"args": ["sh"]})", "process")->oom_score_adj.has_value());
  for (const char* bad : {"1001", "-1001", "\"high\"", "1.5"}) {
    auto q = ParseProcess(std::string(R"({"args": ["sh"], "oomScoreAdj": )") + bad + "}",
                          "process");
    ASSERT_FALSE(q.ok()) << bad;
    EXPECT_EQ(q.status().message(),
              "process: oomScoreAdj must be an integer from -1000 to 1000");
  }
}

}  // namespace
}  // namespace ember::oci
