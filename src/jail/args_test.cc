#include "src/jail/args.h"

#include "gtest/gtest.h"
#include "src/jail/cgroup.h"

namespace ember::jail {
namespace {

std::vector<std::string> Base() {
  return {"--id", "vm-1", "--exec-file", "/proc/self/exe", "--uid", "100", "--gid", "200"};
}

TEST(JailerArgs, Defaults) {
  // /proc/self/exe is a symlink: the exec file must be a regular file.
  EXPECT_FALSE(ParseJailerArgs(Base()).ok());
  std::vector<std::string> args = Base();
  args[3] = EMBER_SOURCE_DIR "/README.md";
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->jail_root(), "/srv/jailer/README.md/vm-1/root");
  EXPECT_EQ(a->parent_cgroup, "README.md");
  EXPECT_EQ(a->cgroup_version, 1);
  EXPECT_FALSE(a->daemonize || a->new_pid_ns);
}

TEST(JailerArgs, EverythingAndTheVmmArgs) {
  std::vector<std::string> args = {
      "--id", "vm-1", "--exec-file", EMBER_SOURCE_DIR "/CMakeLists.txt", "--uid", "100",
      "--gid", "200", "--chroot-base-dir", "/var/jails", "--netns", "/var/run/netns/n1",
      "--cgroup-version", "2", "--cgroup", "memory.max=1000", "--cgroup", "cpu.max=50000 100000",
      "--parent-cgroup", "fleet/a", "--resource-limit", "no-file=64", "--daemonize",
      "--new-pid-ns", "--", "--api-sock", "/run/api.sock", "--", "x"};
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->jail_root(), "/var/jails/CMakeLists.txt/vm-1/root");
  EXPECT_EQ(a->netns, "/var/run/netns/n1");
  ASSERT_EQ(a->cgroups.size(), 2u);
  EXPECT_EQ(a->cgroups[1].controller, "cpu");
  EXPECT_EQ(a->cgroups[1].file, "cpu.max");
  EXPECT_EQ(a->cgroups[1].value, "50000 100000");
  EXPECT_EQ(a->parent_cgroup, "fleet/a");
  ASSERT_EQ(a->resource_limits.size(), 1u);
  EXPECT_EQ(a->resource_limits[0], std::make_pair(static_cast<int>(RLIMIT_NOFILE), rlim_t{64}));
  EXPECT_TRUE(a->daemonize && a->new_pid_ns);
  EXPECT_EQ(a->exec_args, (std::vector<std::string>{"--api-sock", "/run/api.sock", "--", "x"}));
}

TEST(JailerArgs, GivenTwice) {
  std::vector<std::string> args = Base();
  args.insert(args.end(), {"--id", "other"});
  EXPECT_EQ(ParseJailerArgs(args).status().message(), "--id is given twice");
}

TEST(Cgroup, FindsTheMountOfAController) {
  const char kMounts[] =
      "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
      "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n"
      "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
      "cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n"
      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
  EXPECT_EQ(FindCgroupMount(kMounts, 1, "cpu"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(FindCgroupMount(kMounts, 1, "cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(FindCgroupMount(kMounts, 1, "memory"), "/sys/fs/cgroup/memory");
  EXPECT_EQ(FindCgroupMount(kMounts, 1, "pids"), std::nullopt);
  EXPECT_EQ(FindCgroupMount(kMounts, 2, ""), "/sys/fs/cgroup/unified");
  EXPECT_EQ(FindCgroupMount("cgroup /a cgroup rw,memory 0 0\n", 2, ""), std::nullopt);
}

}  // namespace
}  // namespace ember::jail
