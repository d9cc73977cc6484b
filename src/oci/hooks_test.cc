#include "src/oci/hooks.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "src/oci/spec.h"
#include "src/oci/testing.h"

namespace ember::oci {
namespace {

using testing::TempDir;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(HooksTest, ParsedFromConfigJsonAndCheckedByName) {
  auto spec = ParseBundleConfig(R"({"process": {"args": ["sh"], "cwd": "/"},
      "root": {"path": "r"},
      "hooks": {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "true"],
                                   "env": ["A=1"], "timeout": 5}],
                "poststop": [{"path": "/bin/true"}]}})",
                                "/b");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto hooks = ParseHooks(spec->hooks_json);
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  ASSERT_EQ(hooks->create_runtime.size(), 1u);
  EXPECT_EQ(hooks->create_runtime[0].args[2], "true");
  EXPECT_EQ(hooks->create_runtime[0].env[0], "A=1");
  EXPECT_EQ(hooks->create_runtime[0].timeout_s, 5);
  EXPECT_EQ(hooks->poststop[0].path, "/bin/true");
  EXPECT_TRUE(hooks->prestart.empty());
  for (const char* bad : {R"({"poststart": [{"path": "true"}]})",
                          R"({"poststart": [{"path": "/bin/true", "timeout": 0}]})",
                          R"({"poststart": {"path": "/bin/true"}})",
                          R"({"poststart": [{"path": "/bin/true", "args": [1]}]})"}) {
    EXPECT_FALSE(ParseHooks(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseBundleConfig(R"({"process": {"args": ["sh"], "cwd": "/"},
      "root": {"path": "r"}, "hooks": {"prestart": [{"path": "rel"}]}})", "/b").ok());
}

TEST(HooksTest, RunWithTheStateOnStdinExactlyTheirEnvAndInOrder) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  Hook first{"/bin/sh",
             {"sh", "-c", "cat > " + out + "; echo \"$A${HOME:-nohome}\" >> " + out},
             {"A=x"}};
  Hook second{"/bin/sh", {"sh", "-c", "echo second >> " + out}, {}};
  ASSERT_TRUE(RunHooks({first, second}, R"({"id":"c1"})", "createRuntime").ok());
  EXPECT_EQ(Read(out), "{\"id\":\"c1\"}xnohome\nsecond\n") << "the env is the hook's alone";
}

TEST(HooksTest, AFailureNamesTheHookAndStopsTheRest) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  Hook fails{"/bin/sh", {"sh", "-c", "echo broken; exit 3"}, {}};
  Hook after{"/bin/sh", {"sh", "-c", "touch " + out}, {}};
  absl::Status s = RunHooks({fails, after}, "{}", "prestart");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("prestart hook /bin/sh exited 3: broken"), std::string::npos) << s;
  EXPECT_TRUE(Read(out).empty());
  s = RunHooks({{"/nonexistent/hook", {}, {}}}, "{}", "poststop");
  EXPECT_NE(s.message().find("exited 127: cannot execute"), std::string::npos) << s;
  Hook slow{"/bin/sh", {"sh", "-c", "sleep 30"}, {}, 1};
  s = RunHooks({slow}, "{}", "startContainer");
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
}

TEST(HooksTest, PoststartAndPoststopRunEveryHookWhateverFails) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  Hook fails{"/bin/sh", {"sh", "-c", "echo broken; exit 3"}, {}};
  Hook missing{"/nonexistent/hook", {}, {}};
  Hook after{"/bin/sh", {"sh", "-c", "cat >> " + out}, {}};
  std::vector<absl::Status> failures =
      RunEveryHook({fails, after, missing, after}, R"({"id":"c1"})", "poststop");
  ASSERT_EQ(failures.size(), 2u);
  EXPECT_NE(failures[0].message().find("poststop hook /bin/sh exited 3: broken"),
            std::string::npos)
      << failures[0];
  EXPECT_NE(failures[1].message().find("/nonexistent/hook exited 127"), std::string::npos)
      << failures[1];
  EXPECT_EQ(Read(out), "{\"id\":\"c1\"}{\"id\":\"c1\"}") << "both hooks after a failure ran";
  EXPECT_TRUE(RunEveryHook({after}, "{}", "poststart").empty());
}

// What a careless hook does must neither end nor stall the runtime: not
// reading a large state, leaving a process holding its output, closing
// its output and running past its timeout.
TEST(HooksTest, CarelessHooksAreWaitedForOnlyAsLongAsTheyRun) {
  std::string big(256 << 10, 'x');
  EXPECT_TRUE(RunHooks({{"/bin/true", {}, {}}}, big, "poststop").ok());
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(RunHooks({{"/bin/sh", {"sh", "-c", "sleep 30 & exit 0"}, {}}}, "{}", "poststart")
                  .ok());
  absl::Status s =
      RunHooks({{"/bin/sh", {"sh", "-c", "exec >/dev/null 2>&1; sleep 30"}, {}, 1}}, "{}",
               "createRuntime");
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace ember::oci
