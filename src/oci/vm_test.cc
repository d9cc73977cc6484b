#include "src/oci/vm.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include <rapidjson/document.h>

#include <gtest/gtest.h>

#include "src/client/exec_client.h"
#include "src/oci/testing.h"
#include "src/oci/template.h"

namespace ember::oci {
namespace {

using testing::TempDir;

TEST(VmTest, ConfigHasBothDrivesVsockAndTheSize) {
  std::string json = VmConfigJson("/vmlinux", "/agent.ext4", "/root.ext4", "/v.sock", {2, 256});
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  ASSERT_TRUE(doc.IsObject()) << json;
  EXPECT_STREQ(doc["boot-source"]["kernel_image_path"].GetString(), "/vmlinux");
  EXPECT_NE(std::string(doc["boot-source"]["boot_args"].GetString()).find("ember_shell"),
            std::string::npos);
  const auto& drives = doc["drives"];
  ASSERT_EQ(drives.Size(), 2u);
  EXPECT_TRUE(drives[0]["is_root_device"].GetBool());
  EXPECT_TRUE(drives[0]["is_read_only"].GetBool());
  EXPECT_STREQ(drives[1]["drive_id"].GetString(), "container");  // the guest's /dev/vdb
  EXPECT_FALSE(drives[1]["is_read_only"].GetBool());
  EXPECT_STREQ(drives[1]["path_on_host"].GetString(), "/root.ext4");
  EXPECT_EQ(doc["machine-config"]["vcpu_count"].GetUint(), 2u);
  EXPECT_EQ(doc["machine-config"]["mem_size_mib"].GetUint(), 256u);
  EXPECT_STREQ(doc["vsock"]["uds_path"].GetString(), "/v.sock");
  EXPECT_FALSE(doc.HasMember("network-interfaces"));
}

TEST(VmTest, ConfigWithATapHasTheNetworkInterface) {
  std::string json =
      VmConfigJson("/vmlinux", "/agent.ext4", "/root.ext4", "/v.sock", {1, 128}, "ember0123");
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  ASSERT_TRUE(doc.IsObject()) << json;
  const auto& nics = doc["network-interfaces"];
  ASSERT_EQ(nics.Size(), 1u);
  EXPECT_STREQ(nics[0]["iface_id"].GetString(), "eth0");
  EXPECT_STREQ(nics[0]["host_dev_name"].GetString(), "ember0123");
}

TEST(VmTest, JailIdsFollowTheJailersRuleAndDifferPerContainer) {
  std::string a = JailId("/run/x/default", "c1"), b = JailId("/run/x/default", "c2");
  EXPECT_NE(a, b);
  EXPECT_EQ(a, JailId("/run/x/default", "c1"));
  EXPECT_NE(a, JailId("/run/x/other", "c1"));
  EXPECT_LE(a.size(), 64u);
  for (char c : a) EXPECT_TRUE(isalnum(static_cast<unsigned char>(c)) || c == '-') << a;
}

TEST(VmTest, ImageHoldsTheTreeWithRoomToWrite) {
  TempDir dir;
  std::string tree = dir.path() + "/rootfs";
  ASSERT_EQ(mkdir(tree.c_str(), 0755), 0);
  std::ofstream(tree + "/hello") << "hello";
  EXPECT_GE(TreeSize(tree), 4096u);
  std::string image = dir.path() + "/root.ext4";
  ASSERT_TRUE(MakeImage(tree, image).ok());
  struct stat st;
  ASSERT_EQ(stat(image.c_str(), &st), 0);
  EXPECT_GE(st.st_size, 64 << 20);  // the slack
  std::string cmd = "debugfs -R 'cat /hello' " + image + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[64] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, p);
  pclose(p);
  EXPECT_EQ(std::string(buf, n), "hello");
  // A tree that is not there: mke2fs's own words come back.
  EXPECT_FALSE(MakeImage(dir.path() + "/none", dir.path() + "/x.ext4").ok());
}

TEST(VmTest, LayoutWithoutAJailIsTheStateDirectory) {
  VmAssets assets{"/bin/true", "/k", "/r", "", 0, 0};
  auto l = PrepareLayout(assets, "/run/x", "c1", "/run/x/c1");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->uds, "/run/x/c1/v.sock");
  EXPECT_EQ(l->image, "/run/x/c1/root.ext4");
  EXPECT_TRUE(l->jail_dir.empty());
}

TEST(VmTest, LayoutInAJailLinksTheAssetsIn) {
  TempDir dir;
  std::ofstream(dir.path() + "/vmlinux") << "k";
  std::ofstream(dir.path() + "/rootfs.ext4") << "r";
  VmAssets assets{"/usr/bin/ember", dir.path() + "/vmlinux", dir.path() + "/rootfs.ext4",
                  "/usr/bin/ember-jailer", 65534, 65534};
  auto l = PrepareLayout(assets, dir.path() + "/root", "c1", dir.path() + "/root/c1");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->jail_dir, dir.path() + "/root/jail/ember/" + JailId(dir.path() + "/root", "c1"));
  EXPECT_EQ(l->host_root, l->jail_dir + "/root");
  EXPECT_EQ(l->uds, l->host_root + "/v.sock");
  EXPECT_EQ(l->config_in_vm, "/vm.json");
  struct stat a, b;
  ASSERT_EQ(stat((l->host_root + "/vmlinux").c_str(), &a), 0);
  ASSERT_EQ(stat((dir.path() + "/vmlinux").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "a hard link, not a copy";
  EXPECT_EQ(access((l->host_root + "/agent.ext4").c_str(), R_OK), 0);
}

TEST(VmTest, WaitForConsoleSeesTheMarkOrGivesUp) {
  TempDir dir;
  std::string console = dir.path() + "/console.log";
  std::ofstream(console) << "booting\n" << kGuestSettled << "\n";
  EXPECT_TRUE(WaitForConsole(console, kGuestSettled, 1, nullptr));
  EXPECT_FALSE(WaitForConsole(console, "never", 0.3, nullptr));
  EXPECT_FALSE(WaitForConsole(console, "never", 100, [] { return true; }));
  // A mark across the 64 KiB reads, and one written while it waits.
  std::ofstream(console) << std::string(65536 - 5, 'x') << kGuestSettled << "\n";
  EXPECT_TRUE(WaitForConsole(console, kGuestSettled, 1, nullptr));
  std::ofstream(console) << std::string(200000, 'y');
  int looks = 0;
  EXPECT_TRUE(WaitForConsole(console, kGuestSettled, 5, [&] {
    if (++looks == 3) std::ofstream(console, std::ios::app) << "z" << kGuestSettled;
    return false;
  }));
  EXPECT_EQ(looks, 3);
}

void MarkReady(const std::string& dir, const char* jailed) {
  std::ofstream(dir + "/network") << "ember-template\n";
  std::ofstream(dir + "/jailed") << jailed;
}

TEST(VmTest, TemplateIsReadyOnlyOnceMarked) {
  TempDir dir;
  TemplateFiles t;
  EXPECT_FALSE(TemplateReady(dir.path(), VmSize{}, "", &t));
  ASSERT_EQ(mkdir((dir.path() + "/template").c_str(), 0700), 0);
  EXPECT_FALSE(TemplateReady(dir.path(), VmSize{}, "", &t));
  std::ofstream(dir.path() + "/template/jailed") << "1";
  // One made before the VM had a network device is not used: its
  // snapshot has none for the container's TAP.
  EXPECT_FALSE(TemplateReady(dir.path(), VmSize{}, "", &t));
  std::ofstream(dir.path() + "/template/network") << "ember-template\n";
  ASSERT_TRUE(TemplateReady(dir.path(), VmSize{}, "", &t));
  EXPECT_TRUE(t.jailed);
  EXPECT_EQ(t.snapshot, dir.path() + "/template/vm.snap");
}

// A container asking for another size never gets the default template's
// microVM: its own size's template, or a cold boot.
TEST(VmTest, ATemplateServesOnlyItsSize) {
  TempDir dir;
  ASSERT_EQ(mkdir((dir.path() + "/template").c_str(), 0700), 0);
  MarkReady(dir.path() + "/template", "0");
  VmSize big{2, 512};
  TemplateFiles t;
  EXPECT_FALSE(TemplateReady(dir.path(), big, "", &t));
  ASSERT_EQ(mkdir((dir.path() + "/template-2x512").c_str(), 0700), 0);
  MarkReady(dir.path() + "/template-2x512", "0");
  ASSERT_TRUE(TemplateReady(dir.path(), big, "", &t));
  EXPECT_EQ(t.memory, dir.path() + "/template-2x512/vm.mem");
  EXPECT_FALSE(t.jailed);
}

// A template holds the agent it was made with: once the agent's root file
// system is rebuilt (another protocol, maybe), containers boot cold until
// a new template is made.
TEST(VmTest, ATemplateOfAnotherAgentIsNotUsed) {
  TempDir dir;
  std::string agent = dir.path() + "/agent.ext4";
  std::ofstream(agent) << "v1";
  ASSERT_EQ(mkdir((dir.path() + "/template").c_str(), 0700), 0);
  std::ofstream(dir.path() + "/template/agent-stamp") << FileStamp(agent) << "\n";
  MarkReady(dir.path() + "/template", "0");
  TemplateFiles t;
  EXPECT_TRUE(TemplateReady(dir.path(), VmSize{}, agent, &t));
  ASSERT_EQ(unlink(agent.c_str()), 0);
  std::ofstream(agent) << "v2, rebuilt";
  EXPECT_FALSE(TemplateReady(dir.path(), VmSize{}, agent, &t));
}

// Uncaught, a real-time signal would end the monitor (and the VM with it):
// systemd in a container stops on SIGRTMIN+3.
TEST(MonitorTest, ForwardsEveryCatchableSignalButItsOwn) {
  std::vector<int> s = client::ForwardableSignals();
  auto has = [&](int signo) { return std::find(s.begin(), s.end(), signo) != s.end(); };
  for (int signo : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGQUIT, SIGRTMIN, SIGRTMIN + 3, SIGRTMAX}) {
    EXPECT_TRUE(has(signo)) << signo;
  }
  for (int signo : {SIGKILL, SIGSTOP, SIGCHLD, SIGPIPE, SIGWINCH, SIGSEGV, 32, 33}) {
    EXPECT_FALSE(has(signo)) << signo;
  }
}

}  // namespace
}  // namespace ember::oci
