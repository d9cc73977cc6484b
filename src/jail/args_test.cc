#include "src/jail/args.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "src/jail/cgroup.h"

namespace ember::jail {
namespace {

std::vector<std::string> Base() {
  return {"--id", "vm-1", "--exec-file", "/proc/self/exe", "--uid", "100", "--gid", "200"};
}

TEST(JailerArgs, Defaults) {
  std::vector<std::string> args = Base();
  args[3] = EMBER_SOURCE_DIR "/README.md";
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->jail_root(), "/srv/jailer/README.md/vm-1/root");
  EXPECT_EQ(a->pid_file_name(), "README.md.pid");
  EXPECT_EQ(a->parent_cgroup, "README.md");
  EXPECT_EQ(a->cgroup_version, 1);
  EXPECT_FALSE(a->daemonize || a->new_pid_ns || a->help || a->version);
}

// A directory under /tmp, removed at the end.
class TempDir {
 public:
  TempDir() {
    char dir[] = "/tmp/ember-args-test-XXXXXX";
    path_ = mkdtemp(dir);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Firecracker's jailer canonicalizes the exec file: a symlink (even
// /proc/self/exe) or a relative path names the file it resolves to, and
// the jail is named after that file.
TEST(JailerArgs, TheExecFileIsResolved) {
  TempDir tmp;
  const std::string link = tmp.path() + "/firecracker";
  ASSERT_EQ(symlink(EMBER_SOURCE_DIR "/README.md", link.c_str()), 0);
  std::vector<std::string> args = Base();
  args[3] = link;
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->exec_name, "README.md");
  EXPECT_EQ(a->exec_file.substr(a->exec_file.size() - 10), "/README.md");
  EXPECT_TRUE(ParseJailerArgs(Base()).ok()) << "/proc/self/exe";

  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(chdir(tmp.path().c_str()), 0);
  args[3] = "firecracker";
  a = ParseJailerArgs(args);
  ASSERT_EQ(chdir(cwd), 0);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->exec_name, "README.md");

  for (const char* bad : {"/nonexistent/ember", "/tmp", "relative/ember"}) {
    args[3] = bad;
    EXPECT_EQ(ParseJailerArgs(args).status().message(),
              absl::StrCat("--exec-file '", bad, "' must name a regular file"));
  }
  const std::string odd = tmp.path() + "/fire cracker";
  std::ofstream(odd) << "x";
  args[3] = odd;
  EXPECT_NE(ParseJailerArgs(args).status().message().find("whose name may have only"),
            std::string::npos);
}

// Kata passes --uid 0 --gid 0; Firecracker's jailer accepts them.
TEST(JailerArgs, RootIsAccepted) {
  std::vector<std::string> args = Base();
  args[3] = EMBER_SOURCE_DIR "/README.md";
  args[5] = args[7] = "0";
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->uid, 0u);
  EXPECT_EQ(a->gid, 0u);
  args[5] = "-1";
  EXPECT_EQ(ParseJailerArgs(args).status().message(), "--uid '-1' must be a number");
}

TEST(JailerArgs, HelpAndVersionNeedNothingElse) {
  EXPECT_TRUE(ParseJailerArgs({"--help"})->help);
  EXPECT_TRUE(ParseJailerArgs({"-h", "--bogus"})->help);
  EXPECT_TRUE(ParseJailerArgs({"--id", "x", "--version"})->version);
  // After "--" they are the VMM's.
  std::vector<std::string> args = Base();
  args[3] = EMBER_SOURCE_DIR "/README.md";
  args.insert(args.end(), {"--", "--version"});
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(a->version);
  EXPECT_EQ(a->exec_args, std::vector<std::string>{"--version"});
}

TEST(JailerArgs, AnExistingChrootBaseIsResolved) {
  TempDir tmp;
  ASSERT_EQ(mkdir((tmp.path() + "/real").c_str(), 0755), 0);
  ASSERT_EQ(symlink((tmp.path() + "/real").c_str(), (tmp.path() + "/link").c_str()), 0);
  std::vector<std::string> args = Base();
  args[3] = EMBER_SOURCE_DIR "/README.md";
  args.insert(args.end(), {"--chroot-base-dir", tmp.path() + "/link"});
  absl::StatusOr<JailerArgs> a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->chroot_base_dir, tmp.path() + "/real");
  args.back() = tmp.path() + "/link/";
  EXPECT_EQ(ParseJailerArgs(args)->chroot_base_dir, tmp.path() + "/real");
  // A missing one is made later, as given.
  args.back() = tmp.path() + "/link/new jails";
  a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->chroot_base_dir, tmp.path() + "/link/new jails");
  for (const std::string& bad : {std::string("jails"), std::string("/srv/../etc"),
                                 std::string("/srv//x"), std::string(EMBER_SOURCE_DIR "/README.md")}) {
    args.back() = bad;
    EXPECT_FALSE(ParseJailerArgs(args).ok()) << bad;
  }
  // A base that resolves to / still gives a clean jail root.
  args.back() = "/proc/self/root";
  a = ParseJailerArgs(args);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->jail_root(), "/README.md/vm-1/root");
}

TEST(JailerArgs, NetnsIsAnyAbsolutePath) {
  std::vector<std::string> args = Base();
  args[3] = EMBER_SOURCE_DIR "/README.md";
  args.insert(args.end(), {"--netns", "/var/run/netns/cni-1:2"});
  EXPECT_TRUE(ParseJailerArgs(args).ok());
  args.back() = "netns-name";
  EXPECT_EQ(ParseJailerArgs(args).status().message(),
            "--netns 'netns-name' must be an absolute path");
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
