#include "src/oci/mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "src/oci/testing.h"
#include "src/oci/vm.h"

namespace ember::oci {
namespace {

using testing::TempDir;

// containerd's default mounts (oci/mounts.go) and ctr's --mount kinds.
std::vector<MountEntry> CtrDefaults() {
  return {{"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
          {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
          {"/dev/pts", "devpts", "devpts", {"nosuid", "noexec", "newinstance", "gid=5"}},
          {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777"}},
          {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
          {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
          {"/run", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}}};
}

TEST(MountsTest, KernelFileSystemsOutsideTheStandardSetGoToTheGuest) {
  auto plan = PlanMounts(CtrDefaults());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->guest.size(), 1u) << "/proc, /sys and /dev are the agent's";
  const agent::MountSpec& run = plan->guest[0];
  EXPECT_EQ(run.type, "tmpfs");
  EXPECT_EQ(run.target, "/run");
  EXPECT_EQ(run.flags, static_cast<uint32_t>(MS_NOSUID | MS_STRICTATIME));
  EXPECT_EQ(run.data, "mode=755,size=65536k");
  EXPECT_TRUE(plan->copies.empty());
}

// A bind below a tmpfs (containerd's /run) is made after it, in order: its
// copy waits in /.ember-binds, not at its destination in the image.
TEST(MountsTest, ABindIsCopiedAsideAndBoundInOrder) {
  TempDir dir;
  std::ofstream(dir.path() + "/hello") << "hello";
  ASSERT_EQ(symlink((dir.path() + "/hello").c_str(), (dir.path() + "/link").c_str()), 0);
  std::vector<MountEntry> mounts = CtrDefaults();
  mounts.push_back({"/run/secrets", "bind", dir.path(), {"rbind", "ro", "rprivate"}});
  mounts.push_back({"/etc/x.conf", "none", dir.path() + "/link", {"bind"}});
  auto plan = PlanMounts(mounts);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->copies.size(), 2u);
  EXPECT_EQ(plan->copies[0].copy, "/.ember-binds/0");
  EXPECT_EQ(plan->copies[1].source, dir.path() + "/hello") << "the link is followed";
  ASSERT_EQ(plan->guest.size(), 3u);
  EXPECT_EQ(plan->guest[0].target, "/run");
  EXPECT_EQ(plan->guest[1].target, "/run/secrets");
  EXPECT_EQ(plan->guest[1].source, "/.ember-binds/0");
  EXPECT_EQ(plan->guest[1].flags, static_cast<uint32_t>(MS_BIND | MS_REC | MS_RDONLY));
  EXPECT_EQ(plan->guest[2].flags, static_cast<uint32_t>(MS_BIND));
}

TEST(MountsTest, WhatCannotReachAMicroVmIsRefusedByName) {
  auto refused = [](MountEntry m, const std::string& needle) {
    auto plan = PlanMounts({m});
    ASSERT_FALSE(plan.ok()) << m.destination;
    EXPECT_NE(plan.status().message().find(needle), std::string::npos) << plan.status();
  };
  refused({"/data", "ext4", "/dev/sda1", {}}, "mount at /data: type 'ext4' from '/dev/sda1'");
  refused({"/data", "overlay", "overlay", {"lowerdir=/a"}}, "type 'overlay'");
  refused({"/data", "bind", "/nonexistent/x", {"rbind"}}, "bind source '/nonexistent/x'");
  refused({"/data", "bind", "relative", {"rbind"}}, "not an absolute path");
  refused({"/data", "bind", "/dev/null", {"rbind"}}, "not a file or directory");
  refused({"/data", "bind", "/proc/self/status", {"rbind"}}, "pseudo file system");
  refused({"/a/../../etc", "tmpfs", "tmpfs", {}}, "'..' in the destination");
  refused({"/", "tmpfs", "tmpfs", {}}, "the root is root.path");
  refused({"/.ember-binds/x", "tmpfs", "tmpfs", {}}, "Ember's own path");
}

// The copy lands in a real image: files with their modes, a directory
// tree, a symbolic link kept as one.
TEST(MountsTest, CopiesLandInTheImage) {
  TempDir dir;
  std::string root = dir.path() + "/root", src = dir.path() + "/src";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ASSERT_EQ(mkdir(src.c_str(), 0750), 0);
  ASSERT_EQ(mkdir((src + "/sub").c_str(), 0700), 0);
  std::ofstream(src + "/sub/f") << "deep";
  std::ofstream(src + "/run.sh") << "#!/bin/sh\n";
  ASSERT_EQ(chmod((src + "/run.sh").c_str(), 0755), 0);
  ASSERT_EQ(symlink("/etc/shadow", (src + "/link").c_str()), 0);
  std::ofstream(dir.path() + "/hosts") << "new";
  auto plan = PlanMounts({{"/data", "bind", src, {"rbind", "ro"}},
                          {"/etc/hosts", "bind", dir.path() + "/hosts", {"bind"}}});
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string image = dir.path() + "/img.ext4";
  ASSERT_TRUE(MakeImage(root, image, CopiesBytes(*plan)).ok());
  absl::Status applied = ApplyToImage(*plan, image, dir.path() + "/staging");
  ASSERT_TRUE(applied.ok()) << applied;
  EXPECT_NE(access((dir.path() + "/staging").c_str(), F_OK), 0) << "staging removed";
  auto ask = [&](const std::string& command) {
    std::string out;
    EXPECT_TRUE(RunTool({"debugfs", "-R", command, image}, &out).ok()) << out;
    return out;
  };
  EXPECT_NE(ask("cat /.ember-binds/0/sub/f").find("deep"), std::string::npos);
  EXPECT_NE(ask("cat /.ember-binds/1").find("new"), std::string::npos);
  EXPECT_NE(ask("stat /.ember-binds/0/run.sh").find("Mode:  0755"), std::string::npos);
  EXPECT_NE(ask("stat /.ember-binds/0").find("Mode:  0750"), std::string::npos);
  std::string link = ask("stat /.ember-binds/0/link");
  EXPECT_NE(link.find("Type: symlink"), std::string::npos) << "copied as a link, not followed";
  EXPECT_NE(link.find("/etc/shadow"), std::string::npos);
}

TEST(MountsTest, ANameDebugfsCannotTakeIsRefusedNotMangled) {
  TempDir dir;
  std::string root = dir.path() + "/root", src = dir.path() + "/src";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  std::ofstream(src + "/a b") << "x";
  auto plan = PlanMounts({{"/data", "bind", src, {"rbind"}}});
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string image = dir.path() + "/img.ext4";
  ASSERT_TRUE(MakeImage(root, image).ok());
  absl::Status applied = ApplyToImage(*plan, image, dir.path() + "/staging");
  ASSERT_FALSE(applied.ok());
  EXPECT_NE(applied.message().find("a name with white space"), std::string::npos) << applied;
}

}  // namespace
}  // namespace ember::oci
