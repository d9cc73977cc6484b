// The pre-boot controller is plain code: every rule is checked here
// without KVM.
#include "src/vmm/preboot_controller.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace ember {
namespace {

DriveConfig Drive(const std::string& id, bool root = false) {
  DriveConfig d;
  d.drive_id = id;
  d.path_on_host = "/images/" + id;
  d.is_root_device = root;
  return d;
}

NetConfig Net(const std::string& id, const std::string& tap) {
  NetConfig n;
  n.iface_id = id;
  n.host_dev_name = tap;
  return n;
}

TEST(PreBootControllerTest, MachineConfigIsValidatedAndPatchedFieldByField) {
  PreBootController c{VmConfig{}};
  MachineConfig m;
  m.vcpu_count = 2;
  m.mem_size_mib = 256;
  ASSERT_TRUE(c.Handle(PutMachineConfig{m}).ok());
  EXPECT_EQ(c.config().machine.vcpu_count, 2u);

  ASSERT_TRUE(c.Handle(PatchMachineConfig{std::nullopt, 512, std::nullopt}).ok());
  EXPECT_EQ(c.config().machine.vcpu_count, 2u) << "not in the patch: unchanged";
  EXPECT_EQ(c.config().machine.mem_size_mib, 512u);

  MachineConfig bad = m;
  bad.vcpu_count = 0;
  EXPECT_FALSE(c.Handle(PutMachineConfig{bad}).ok());
  EXPECT_FALSE(c.Handle(PatchMachineConfig{0, std::nullopt, std::nullopt}).ok());
  EXPECT_EQ(c.config().machine.vcpu_count, 2u) << "a refused change leaves the config as it was";

  absl::StatusOr<VmmResult> got = c.Handle(GetMachineConfig{});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::get<MachineConfig>(*got).mem_size_mib, 512u);
}

TEST(PreBootControllerTest, DrivesAreReplacedByIdAndOneRootAtMost) {
  PreBootController c{VmConfig{}};
  ASSERT_TRUE(c.Handle(PutDrive{Drive("rootfs", true)}).ok());
  ASSERT_TRUE(c.Handle(PutDrive{Drive("data")}).ok());
  DriveConfig again = Drive("data");
  again.path_on_host = "/images/other";
  ASSERT_TRUE(c.Handle(PutDrive{again}).ok());
  ASSERT_EQ(c.config().drives.size(), 2u);
  EXPECT_EQ(c.config().drives[1].path_on_host, "/images/other");

  absl::StatusOr<VmmResult> second_root = c.Handle(PutDrive{Drive("root2", true)});
  EXPECT_FALSE(second_root.ok());
  EXPECT_EQ(c.config().drives.size(), 2u);

  ASSERT_TRUE(c.Handle(PatchDrive{"rootfs", "/images/new"}).ok());
  EXPECT_EQ(c.config().drives[0].path_on_host, "/images/new");
  absl::StatusOr<VmmResult> missing = c.Handle(PatchDrive{"nope", "/x"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "there is no drive 'nope'");
}

TEST(PreBootControllerTest, NetworkInterfacesNeedUniqueTaps) {
  PreBootController c{VmConfig{}};
  ASSERT_TRUE(c.Handle(PutNetworkInterface{Net("eth0", "tap0")}).ok());
  EXPECT_FALSE(c.Handle(PutNetworkInterface{Net("eth1", "tap0")}).ok());
  ASSERT_TRUE(c.Handle(PutNetworkInterface{Net("eth0", "tap1")}).ok()) << "replaces eth0";
  ASSERT_EQ(c.config().net.size(), 1u);
  EXPECT_EQ(c.config().net[0].host_dev_name, "tap1");
  EXPECT_TRUE(c.Handle(PatchNetworkInterface{"eth0"}).ok());
  absl::StatusOr<VmmResult> missing = c.Handle(PatchNetworkInterface{"eth9"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "there is no network interface 'eth9'");
}

TEST(PreBootControllerTest, BalloonFitsTheGuestAndExistsBeforeItIsPatched) {
  VmConfig config;
  config.machine.mem_size_mib = 128;
  PreBootController c{config};
  absl::StatusOr<VmmResult> none = c.Handle(PatchBalloon{10});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(), "there is no balloon device");
  EXPECT_FALSE(c.Handle(GetBalloon{}).ok());

  BalloonConfig b;
  b.amount_mib = 64;
  ASSERT_TRUE(c.Handle(PutBalloon{b}).ok());
  EXPECT_FALSE(c.Handle(PatchBalloon{4096}).ok()) << "larger than the guest";
  ASSERT_TRUE(c.Handle(PatchBalloon{32}).ok());
  ASSERT_TRUE(c.Handle(PatchBalloonStats{5}).ok());
  absl::StatusOr<VmmResult> got = c.Handle(GetBalloon{});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::get<BalloonConfig>(*got).amount_mib, 32u);
  EXPECT_EQ(std::get<BalloonConfig>(*got).stats_polling_interval_s, 5u);

  absl::StatusOr<VmmResult> stats = c.Handle(GetBalloonStats{});
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().message(), "balloon statistics exist once the microVM runs");
}

TEST(PreBootControllerTest, PatchDriveChangesAndRemovesBuckets) {
  VmConfig config;
  config.drives.push_back(DriveConfig{"d", "/d"});
  PreBootController c{config};
  RateLimiterUpdate add;
  add.bandwidth = TokenBucketConfig{1000, 100, 0};
  add.ops = TokenBucketConfig{10, 100, 0};
  ASSERT_TRUE(c.Handle(PatchDrive{"d", std::nullopt, add}).ok());
  ASSERT_TRUE(c.config().drives[0].rate_limiter);
  EXPECT_EQ(c.config().drives[0].rate_limiter->ops, (TokenBucketConfig{10, 100, 0}));
  RateLimiterUpdate drop_ops;
  drop_ops.ops = std::optional<TokenBucketConfig>();
  ASSERT_TRUE(c.Handle(PatchDrive{"d", std::nullopt, drop_ops}).ok());
  EXPECT_FALSE(c.config().drives[0].rate_limiter->ops);
  EXPECT_TRUE(c.config().drives[0].rate_limiter->bandwidth) << "a bucket not given stays";
  RateLimiterUpdate drop_bandwidth;
  drop_bandwidth.bandwidth = std::optional<TokenBucketConfig>();
  ASSERT_TRUE(c.Handle(PatchDrive{"d", std::nullopt, drop_bandwidth}).ok());
  EXPECT_FALSE(c.config().drives[0].rate_limiter) << "no bucket left: no limiter";
  EXPECT_EQ(c.config().drives[0].path_on_host, "/d");
}

TEST(PreBootControllerTest, EntropyDeviceIsAddedOnce) {
  PreBootController c{VmConfig{}};
  EXPECT_FALSE(c.config().entropy.has_value());
  ASSERT_TRUE(c.Handle(PutEntropy{}).ok());
  EXPECT_TRUE(c.config().entropy.has_value());
  ASSERT_TRUE(c.Handle(PutEntropy{}).ok()) << "a second PUT replaces the first";
  absl::StatusOr<VmmResult> got = c.Handle(GetVmConfig{});
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(std::get<VmConfig>(*got).entropy.has_value());
}

TEST(PreBootControllerTest, VsockNeedsAFreePathInAnExistingDirectory) {
  PreBootController c{VmConfig{}};
  char dir[] = "/tmp/ember-vsock-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  VsockConfig v;
  v.guest_cid = 3;
  v.uds_path = std::string(dir) + "/v.sock";
  ASSERT_TRUE(c.Handle(PutVsock{v}).ok());
  EXPECT_EQ(c.config().vsock->uds_path, v.uds_path);

  VsockConfig taken = v;
  taken.uds_path = dir;
  absl::StatusOr<VmmResult> r = c.Handle(PutVsock{taken});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), absl::StrCat("vsock.uds_path ", dir,
                                               " already exists; remove it or choose another path"));
  VsockConfig nodir = v;
  nodir.uds_path = std::string(dir) + "/missing/v.sock";
  r = c.Handle(PutVsock{nodir});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), absl::StrCat("vsock.uds_path ", nodir.uds_path, ": directory ",
                                               dir, "/missing does not exist"));
  VsockConfig low = v;
  low.guest_cid = 2;
  EXPECT_FALSE(c.Handle(PutVsock{low}).ok());
  EXPECT_EQ(c.config().vsock->uds_path, v.uds_path) << "a refused PUT changes nothing";
  rmdir(dir);
}

TEST(PreBootControllerTest, BootSourceAndSerialAreTaken) {
  PreBootController c{VmConfig{}};
  BootSourceConfig boot;
  boot.kernel_image_path = "/k";
  boot.boot_args = "console=ttyS0";
  ASSERT_TRUE(c.Handle(PutBootSource{boot}).ok());
  SerialConfig serial;
  serial.serial_out_path = "/tmp/console";
  ASSERT_TRUE(c.Handle(PutSerial{serial}).ok());
  absl::StatusOr<VmmResult> got = c.Handle(GetVmConfig{});
  ASSERT_TRUE(got.ok());
  const VmConfig& config = std::get<VmConfig>(*got);
  ASSERT_TRUE(config.boot_source.has_value());
  EXPECT_EQ(config.boot_source->kernel_image_path, "/k");
  EXPECT_EQ(config.serial.serial_out_path, "/tmp/console");
}

TEST(PreBootControllerTest, WhatNeedsARunningMicroVmIsRefused) {
  PreBootController c{VmConfig{}};
  const VmmAction live[] = {SendCtrlAltDel{}, PatchVmState{true},
                            CreateSnapshot{"/s", "/m", false}};
  for (const VmmAction& a : live) {
    absl::StatusOr<VmmResult> r = c.Handle(a);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(r.status().message(), "the microVM has not started yet");
  }
}

}  // namespace
}  // namespace ember
