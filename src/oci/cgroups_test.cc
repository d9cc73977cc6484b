#include "src/oci/cgroups.h"

#include <gtest/gtest.h>

#include "src/oci/spec.h"

namespace ember::oci {
namespace {

std::string Setting(const jail::CgroupPlacement& p, const std::string& file) {
  for (const jail::CgroupSetting& s : p.settings) {
    if (s.file == file) return s.controller + ":" + s.value;
  }
  return "";
}

TEST(CgroupsTest, RuncsLimitsUnderV1AndV2) {
  auto spec = ParseBundleConfig(R"({"process": {"args": ["sh"], "cwd": "/"},
      "root": {"path": "rootfs"},
      "linux": {"cgroupsPath": "/default/box",
                "resources": {"memory": {"limit": 536870912},
                              "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
                              "pids": {"limit": 64}}}})",
                                "/b");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->cgroups_path, "/default/box");
  auto v1 = PlanCgroup(spec->cgroups_path, spec->resources, 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->relative, "default/box");
  EXPECT_EQ(Setting(*v1, "memory.limit_in_bytes"), "memory:536870912");
  EXPECT_EQ(Setting(*v1, "cpu.shares"), "cpu:1024");
  EXPECT_EQ(Setting(*v1, "cpu.cfs_quota_us"), "cpu:50000");
  EXPECT_EQ(Setting(*v1, "cpu.cfs_period_us"), "cpu:100000");
  EXPECT_EQ(Setting(*v1, "pids.max"), "pids:64");
  auto v2 = PlanCgroup(spec->cgroups_path, spec->resources, 2);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(Setting(*v2, "memory.max"), "memory:536870912");
  EXPECT_EQ(Setting(*v2, "cpu.max"), "cpu:50000 100000");
  EXPECT_EQ(Setting(*v2, "cpu.weight"), "cpu:39");  // runc's conversion of 1024
  EXPECT_EQ(v1->also_join, ContainerControllers()) << "statistics need the cgroup anyway";
}

TEST(CgroupsTest, UnlimitedAndBadPaths) {
  Resources none;
  none.memory_limit = -1;
  none.cpu_quota = -1;
  none.pids_limit = -1;
  auto p = PlanCgroup("default/x", none, 1);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Setting(*p, "memory.limit_in_bytes"), "memory:-1") << "unlimited, over a limit";
  EXPECT_EQ(Setting(*p, "cpu.cfs_quota_us"), "cpu:-1");
  EXPECT_EQ(Setting(*p, "pids.max"), "pids:max");
  p = PlanCgroup("default/x", none, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Setting(*p, "memory.max"), "memory:max");
  EXPECT_EQ(Setting(*p, "cpu.max"), "cpu:max 100000");
  EXPECT_TRUE(PlanCgroup("default/x", Resources{}, 2)->settings.empty());
  EXPECT_FALSE(PlanCgroup("/default/../../x", none, 1).ok());
  EXPECT_FALSE(PlanCgroup("/default/.", none, 1).ok()) << "the shared parent's limits";
  EXPECT_FALSE(PlanCgroup("/default//x", none, 1).ok());
  EXPECT_FALSE(PlanCgroup("/", none, 1).ok());
  auto bad = ParseBundleConfig(R"({"process": {"args": ["sh"], "cwd": "/"},
      "root": {"path": "r"}, "linux": {"resources": {"memory": {"limit": "lots"}}}})", "/b");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("linux.resources.memory: limit must be an integer"),
            std::string::npos)
      << bad.status();
}

// What containerd passes with SystemdCgroup = true (kubelet's systemd
// driver), placed where systemd (and runc) would place it.
TEST(CgroupsTest, SystemdFormIsSystemdsPath) {
  EXPECT_EQ(*SystemdCgroupPath("kubepods-besteffort-pod1.slice:cri-containerd:abc"),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/"
            "cri-containerd-abc.scope");
  EXPECT_EQ(*SystemdCgroupPath("system.slice:docker:x"), "system.slice/docker-x.scope");
  EXPECT_EQ(*SystemdCgroupPath(":ctr:x"), "system.slice/ctr-x.scope") << "runc's default slice";
  EXPECT_EQ(*SystemdCgroupPath("-.slice:p:x"), "p-x.scope") << "the root slice";
  EXPECT_EQ(*SystemdCgroupPath("a-b.slice::n"), "a.slice/a-b.slice/-n.scope") << "runc's name";
  EXPECT_EQ(*SystemdCgroupPath("a.slice:p:c.slice"), "a.slice/c.slice") << "a slice as the unit";
  for (const char* bad : {"a.slice:p", "a.slice:p:", "a:p:x", "a/b.slice:p:x", "a--b.slice:p:x",
                          "-a.slice:p:x", "a-.slice:p:x", ".slice:p:x", "a.slice:p:x/y",
                          "a:b:c:d"}) {
    auto p = SystemdCgroupPath(bad);
    EXPECT_FALSE(p.ok() && PlanCgroup(bad, Resources{}, 2).ok()) << bad << " " << *p;
    if (!p.ok()) {
      EXPECT_NE(p.status().message().find("the systemd form is slice:prefix:name"),
                std::string::npos);
    }
  }
  auto plan = PlanCgroup("kubepods.slice:cri-containerd:abc", Resources{}, 1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->relative, "kubepods.slice/cri-containerd-abc.scope");
}

}  // namespace
}  // namespace ember::oci
