#include "src/jail/jail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "gtest/gtest.h"

namespace ember::jail {
namespace {

constexpr uid_t kJailUid = 46124;
constexpr gid_t kJailGid = 46125;

// CreateJail under a fresh directory in /tmp (root's, sticky: as a
// chroot base under /tmp would be).
class CreateJailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the jailer runs as root (chown)";
    char dir[] = "/tmp/ember-jail-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    tmp_ = dir;
    std::ofstream(tmp_ + "/vmm") << "#!/bin/true\n";
    args_.id = "vm-1";
    args_.exec_file = tmp_ + "/vmm";
    args_.exec_name = "vmm";
    args_.uid = kJailUid;
    args_.gid = kJailGid;
    args_.chroot_base_dir = tmp_ + "/jails";
  }
  void TearDown() override {
    if (!tmp_.empty()) std::filesystem::remove_all(tmp_);
  }

  std::string IdDir() const { return args_.chroot_base_dir + "/vmm/vm-1"; }
  static struct stat Lstat(const std::string& path) {
    struct stat st = {};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st;
  }
  static void MakeDirs(const std::string& path, mode_t mode) {
    std::filesystem::create_directories(path);
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
  }

  std::string tmp_;
  JailerArgs args_;
};

TEST_F(CreateJailTest, AFreshTreeIsMadeWithTheRightOwners) {
  absl::StatusOr<JailDirs> jail = CreateJail(args_);
  ASSERT_TRUE(jail.ok()) << jail.status();
  for (const std::string& dir : {args_.chroot_base_dir, args_.chroot_base_dir + "/vmm", IdDir()}) {
    struct stat st = Lstat(dir);
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
    EXPECT_EQ(st.st_uid, 0u) << dir;
    EXPECT_EQ(st.st_mode & 022, 0u) << dir << " writable by others";
  }
  struct stat root = Lstat(args_.jail_root());
  EXPECT_TRUE(S_ISDIR(root.st_mode));
  EXPECT_EQ(root.st_uid, kJailUid);
  EXPECT_EQ(root.st_gid, kJailGid);
  struct stat copy = Lstat(args_.jail_root() + "/vmm");
  EXPECT_TRUE(S_ISREG(copy.st_mode));
  EXPECT_EQ(copy.st_nlink, 1u);
  std::ifstream in(args_.jail_root() + "/vmm");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "#!/bin/true\n");
  // The fds are the directories just made.
  struct stat fd_st;
  ASSERT_EQ(fstat(jail->root.get(), &fd_st), 0);
  EXPECT_EQ(fd_st.st_ino, root.st_ino);
  ASSERT_EQ(fstat(jail->id_dir.get(), &fd_st), 0);
  EXPECT_EQ(fd_st.st_ino, Lstat(IdDir()).st_ino);
}

TEST_F(CreateJailTest, AnEarlierJailWithTheSameIdIsReused) {
  ASSERT_TRUE(CreateJail(args_).ok());
  absl::StatusOr<JailDirs> again = CreateJail(args_);
  EXPECT_TRUE(again.ok()) << again.status() << ": the root is the jail user's already";
}

// Issue 12, defect 7: an existing directory was accepted whatever its
// owner and mode.
TEST_F(CreateJailTest, AWorldWritableJailDirectoryIsRefused) {
  MakeDirs(IdDir(), 0777);
  absl::StatusOr<JailDirs> jail = CreateJail(args_);
  ASSERT_FALSE(jail.ok());
  EXPECT_EQ(jail.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(jail.status().message(),
            IdDir() + " is writable by everyone (mode 0777) without the sticky bit; refusing to "
                      "build a jail through it (another user could swap its entries)");
  EXPECT_NE(access(args_.jail_root().c_str(), F_OK), 0) << "nothing made inside it";
}

TEST_F(CreateJailTest, AGroupWritableBaseIsRefusedAStickyOneIsNot) {
  MakeDirs(args_.chroot_base_dir, 0775);
  absl::StatusOr<JailDirs> jail = CreateJail(args_);
  ASSERT_FALSE(jail.ok());
  EXPECT_NE(jail.status().message().find("is writable by its group (mode 0775)"),
            std::string::npos)
      << jail.status();
  ASSERT_EQ(chmod(args_.chroot_base_dir.c_str(), 01777), 0);  // as /tmp
  EXPECT_TRUE(CreateJail(args_).ok());
}

TEST_F(CreateJailTest, ADirectoryOwnedByAnotherUserIsRefused) {
  MakeDirs(args_.chroot_base_dir + "/vmm", 0755);
  ASSERT_EQ(chown((args_.chroot_base_dir + "/vmm").c_str(), 4242, 4242), 0);
  absl::StatusOr<JailDirs> jail = CreateJail(args_);
  ASSERT_FALSE(jail.ok());
  EXPECT_NE(jail.status().message().find(args_.chroot_base_dir +
                                         "/vmm is owned by uid 4242, not root"),
            std::string::npos)
      << jail.status();
  // Not even the jail's own user may own a directory above its root.
  ASSERT_EQ(chown((args_.chroot_base_dir + "/vmm").c_str(), kJailUid, kJailGid), 0);
  EXPECT_FALSE(CreateJail(args_).ok());
}

TEST_F(CreateJailTest, ASymlinkOnThePathIsRefused) {
  MakeDirs(args_.chroot_base_dir + "/vmm", 0755);
  MakeDirs(tmp_ + "/elsewhere", 0755);
  ASSERT_EQ(symlink((tmp_ + "/elsewhere").c_str(), IdDir().c_str()), 0);
  absl::StatusOr<JailDirs> jail = CreateJail(args_);
  ASSERT_FALSE(jail.ok());
  EXPECT_EQ(jail.status().message(),
            IdDir() + " is a symlink; refusing to build a jail through it");
  EXPECT_TRUE(std::filesystem::is_empty(tmp_ + "/elsewhere"));
}

// Kata reads <jail root>/firecracker.pid; Firecracker writes the bare
// number.
TEST(WritePidFile, WritesTheNumberAndReplacesWhatWasThere) {
  char dir[] = "/tmp/ember-pid-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string tmp = dir;
  UniqueFd fd(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  auto read = [&](const std::string& name) {
    std::ifstream in(tmp + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  ASSERT_TRUE(WritePidFile(fd.get(), "firecracker.pid", 4242).ok());
  EXPECT_EQ(read("firecracker.pid"), "4242");
  ASSERT_TRUE(WritePidFile(fd.get(), "firecracker.pid", 17).ok());
  EXPECT_EQ(read("firecracker.pid"), "17");
  // An earlier VMM (which owns the jail root) left a symlink: replaced,
  // its target untouched.
  std::ofstream(tmp + "/target") << "keep";
  ASSERT_EQ(symlink((tmp + "/target").c_str(), (tmp + "/ember.pid").c_str()), 0);
  ASSERT_TRUE(WritePidFile(fd.get(), "ember.pid", 99).ok());
  EXPECT_EQ(read("ember.pid"), "99");
  EXPECT_EQ(read("target"), "keep");
  struct stat st;
  ASSERT_EQ(lstat((tmp + "/ember.pid").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  std::filesystem::remove_all(tmp);
}

}  // namespace
}  // namespace ember::jail
