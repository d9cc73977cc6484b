#include "src/agent/spawn.h"

#include <gtest/gtest.h>

namespace ember::agent {
namespace {

TEST(SpawnTest, RequestEnvironmentReplacesAndAppends) {
  char a[] = "PATH=/bin", b[] = "HOME=/", c[] = "PATHX=1";
  char* base[] = {a, b, c, nullptr};
  auto env = MergeEnvironment(base, {"PATH=/usr/bin", "NEW=x=y"});
  EXPECT_EQ(env, (std::vector<std::string>{"PATH=/usr/bin", "HOME=/", "PATHX=1", "NEW=x=y"}));
}

TEST(SpawnTest, ContainerKeepsItsSpecAndTheGuestsGlibcTunables) {
  char a[] = "PATH=/bin", b[] = "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2", c[] = "HOME=/";
  char* base[] = {a, b, c, nullptr};
  EXPECT_EQ(ContainerEnvironment(base, {"PATH=/usr/bin"}),
            (std::vector<std::string>{"PATH=/usr/bin", "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2"}));
  // The spec's own setting wins; a guest without it adds nothing.
  EXPECT_EQ(ContainerEnvironment(base, {"GLIBC_TUNABLES=x"}),
            (std::vector<std::string>{"GLIBC_TUNABLES=x"}));
  char* bare[] = {a, c, nullptr};
  EXPECT_EQ(ContainerEnvironment(bare, {"X=1"}), (std::vector<std::string>{"X=1"}));
}

TEST(SpawnTest, ExecCandidatesFollowPath) {
  EXPECT_EQ(ExecCandidates("./run", "/bin"), std::vector<std::string>{"./run"});
  EXPECT_EQ(ExecCandidates("/bin/sh", "/usr/bin"), std::vector<std::string>{"/bin/sh"});
  EXPECT_EQ(ExecCandidates("ls", "/usr/bin::/bin"),
            (std::vector<std::string>{"/usr/bin/ls", "./ls", "/bin/ls"}));
}

}  // namespace
}  // namespace ember::agent
