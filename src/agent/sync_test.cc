#include "src/agent/sync.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "src/agent/fd.h"
#include "src/agent/sync_testing.h"

namespace ember::agent {
namespace {

class ApplyTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ember-sync-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    top_ = dir_ + "/top";
    ASSERT_EQ(mkdir(top_.c_str(), 0755), 0);
    fd_.reset(open(top_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  void TearDown() override { (void)!system(("rm -rf " + dir_).c_str()); }

  bool Apply(const std::vector<TreeEntry>& entries) {
    error_.clear();
    return ApplyTree(fd_.get(), entries, &error_);
  }
  std::string Read(const std::string& path) {
    std::ifstream in(top_ + "/" + path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string Link(const std::string& path) {
    char buf[4096];
    ssize_t n = readlink((top_ + "/" + path).c_str(), buf, sizeof(buf));
    return n < 0 ? "" : std::string(buf, n);
  }
  struct stat Stat(const std::string& path) {
    struct stat st {};
    lstat((top_ + "/" + path).c_str(), &st);
    return st;
  }
  bool Exists(const std::string& path) {
    struct stat st;
    return lstat((top_ + "/" + path).c_str(), &st) == 0;
  }

  std::string dir_, top_, error_;
  Fd fd_;
};

TEST_F(ApplyTreeTest, AVolumeUpdateSwapsItsDataAndDropsTheOld) {
  ASSERT_TRUE(Apply(testing::Volume("..v1", {{"a", "1"}, {"b", "2"}}, 01777))) << error_;
  EXPECT_EQ(Read("a"), "1");
  EXPECT_EQ(Link("..data"), "..v1");
  EXPECT_EQ(Stat("").st_mode & 07777, 01777u);
  ASSERT_TRUE(Apply(testing::Volume("..v2", {{"a", "10"}, {"c", std::string("\0\1", 2)}},
                                    01777)))
      << error_;
  EXPECT_EQ(Link("..data"), "..v2");
  EXPECT_EQ(Read("a"), "10");
  EXPECT_EQ(Read("c"), std::string("\0\1", 2));
  EXPECT_FALSE(Exists("b"));
  EXPECT_FALSE(Exists("..v1"));
  EXPECT_FALSE(Exists(".ember-sync.new"));
}

TEST_F(ApplyTreeTest, WhatIsUnchangedIsNotTouched) {
  std::vector<TreeEntry> tree = {{TreeEntry::kDirectory, "", 0755},
                                 {TreeEntry::kFile, "same", 0640, 0, 0, "x"},
                                 {TreeEntry::kFile, "changed", 0640, 0, 0, "x"},
                                 {TreeEntry::kLink, "link", 0, 0, 0, "same"}};
  ASSERT_TRUE(Apply(tree)) << error_;
  ino_t same = Stat("same").st_ino, changed = Stat("changed").st_ino, link = Stat("link").st_ino;
  tree[2].data = "y";
  ASSERT_TRUE(Apply(tree)) << error_;
  EXPECT_EQ(Stat("same").st_ino, same);
  EXPECT_EQ(Stat("link").st_ino, link);
  EXPECT_NE(Stat("changed").st_ino, changed) << "replaced whole, by a rename";
  EXPECT_EQ(Read("changed"), "y");
  tree[1].mode = 0600;  // a mode alone changes it too
  ASSERT_TRUE(Apply(tree)) << error_;
  EXPECT_EQ(Stat("same").st_mode & 07777, 0600u);
}

// What the guest has in the way is replaced, whatever its kind, and a link
// on the way is never followed out of the directory.
TEST_F(ApplyTreeTest, KindsChangeAndLinksAreNotFollowed) {
  std::string outside = dir_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(symlink(outside.c_str(), (top_ + "/d").c_str()), 0);
  ASSERT_EQ(mkdir((top_ + "/f").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((top_ + "/f/deep").c_str(), 0755), 0);
  std::ofstream(top_ + "/l") << "file";
  ASSERT_EQ(symlink(outside.c_str(), (top_ + "/stray").c_str()), 0);
  ASSERT_TRUE(Apply({{TreeEntry::kDirectory, "", 0755},
                     {TreeEntry::kDirectory, "d", 0700},
                     {TreeEntry::kFile, "d/inside", 0644, 0, 0, "in"},
                     {TreeEntry::kFile, "f", 0644, 0, 0, "now a file"},
                     {TreeEntry::kLink, "l", 0, 0, 0, "f"}}))
      << error_;
  EXPECT_TRUE(S_ISDIR(Stat("d").st_mode));
  EXPECT_EQ(Read("d/inside"), "in");
  EXPECT_EQ(Read("f"), "now a file");
  EXPECT_EQ(Link("l"), "f");
  EXPECT_FALSE(Exists("stray"));
  struct stat st;
  EXPECT_NE(lstat((outside + "/inside").c_str(), &st), 0) << "written through the guest's link";
  EXPECT_EQ(lstat(outside.c_str(), &st), 0) << "a link's target removed";
}

// What a failed SYNC (or the guest) left under the agent's temporary name
// is replaced, not written through: a hard link to a file elsewhere, a FIFO.
TEST_F(ApplyTreeTest, LeftoversAreNotWrittenThrough) {
  std::string outside = dir_ + "/outside";
  std::ofstream(outside) << "keep";
  ASSERT_EQ(mkdir((top_ + "/fifo").c_str(), 0755), 0);
  ASSERT_EQ(link(outside.c_str(), (top_ + "/.ember-sync.new").c_str()), 0);
  ASSERT_EQ(mkfifo((top_ + "/fifo/.ember-sync.new").c_str(), 0644), 0);
  ASSERT_TRUE(Apply({{TreeEntry::kDirectory, "", 0755},
                     {TreeEntry::kFile, "a", 0644, 0, 0, "new"},
                     {TreeEntry::kDirectory, "fifo", 0755},
                     {TreeEntry::kFile, "fifo/b", 0644, 0, 0, "new"}}))
      << error_;
  EXPECT_EQ(Read("a"), "new");
  EXPECT_EQ(Read("fifo/b"), "new");
  std::ifstream in(outside);
  std::string kept;
  in >> kept;
  EXPECT_EQ(kept, "keep");
  EXPECT_FALSE(Exists(".ember-sync.new"));
  EXPECT_FALSE(Exists("fifo/.ember-sync.new"));
}

TEST_F(ApplyTreeTest, OwnersAreTheHosts) {
  if (geteuid() != 0) GTEST_SKIP() << "chown needs root";
  ASSERT_TRUE(Apply({{TreeEntry::kDirectory, "", 0755, 0, 2000},
                     {TreeEntry::kFile, "token", 0640, 0, 2000, "secret"},
                     {TreeEntry::kLink, "l", 0, 1000, 1000, "token"}}))
      << error_;
  EXPECT_EQ(Stat("").st_gid, 2000u);
  EXPECT_EQ(Stat("token").st_gid, 2000u);
  EXPECT_EQ(Stat("token").st_mode & 07777, 0640u);
  EXPECT_EQ(Stat("l").st_uid, 1000u);
}

}  // namespace
}  // namespace ember::agent
