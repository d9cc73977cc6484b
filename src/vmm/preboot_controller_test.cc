// The pre-boot controller is plain code: every rule is checked here
// without KVM.
#include "src/vmm/preboot_controller.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace ember {
namespace {

// A drive whose file exists and opens read-write (/dev/null).
DriveConfig Drive(const std::string& id, bool root = false) {
  DriveConfig d;
  d.drive_id = id;
  d.path_on_host = "/dev/null";
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

// As in Firecracker: an empty template is none, and machine-config's
// cpu_template "None" drops a custom one; a machine-config without the
// field keeps it.
TEST(PreBootControllerTest, CpuTemplatesAreDroppedByNoneOrEmpty) {
  PreBootController c{VmConfig{}};
  CpuTemplate t;
  t.msr_modifiers = {{0x10a, {1, 0}}};
  ASSERT_TRUE(c.Handle(PutCpuConfig{t}).ok());
  ASSERT_TRUE(c.config().cpu_config);
  ASSERT_TRUE(c.Handle(PutMachineConfig{MachineConfig{}}).ok());
  EXPECT_TRUE(c.config().cpu_config) << "no cpu_template field: kept";
  PatchMachineConfig none;
  none.cpu_template = StaticCpuTemplate::kNone;
  ASSERT_TRUE(c.Handle(none).ok());
  EXPECT_FALSE(c.config().cpu_config);
  ASSERT_TRUE(c.Handle(PutCpuConfig{t}).ok());
  ASSERT_TRUE(c.Handle(PutMachineConfig{MachineConfig{}, /*sets_cpu_template=*/true}).ok());
  EXPECT_FALSE(c.config().cpu_config);
  ASSERT_TRUE(c.Handle(PutCpuConfig{t}).ok());
  ASSERT_TRUE(c.Handle(PutCpuConfig{CpuTemplate{}}).ok());
  EXPECT_FALSE(c.config().cpu_config) << "{} is no template";
}

// One slot, as in Firecracker: a static template replaces a custom one and
// the reverse; a machine-config without the field keeps either. Set on a
// host it was not made for, a static one is refused at once.
TEST(PreBootControllerTest, StaticAndCustomTemplatesReplaceEachOther) {
  PreBootController c{VmConfig{}};
  StaticCpuTemplate t2a = StaticCpuTemplate::kT2A;
  MachineConfig m;
  m.cpu_template = t2a;
  c.set_host_cpu({"AuthenticAMD", 0xb00f21});  // Turin
  absl::StatusOr<VmmResult> put = c.Handle(PutMachineConfig{m, /*sets_cpu_template=*/true});
  ASSERT_FALSE(put.ok());
  EXPECT_NE(put.status().message().find("\"T2A\" is made for Milan"), std::string::npos)
      << put.status();
  EXPECT_EQ(c.config().machine.cpu_template, StaticCpuTemplate::kNone) << "nothing changed";

  c.set_host_cpu({"AuthenticAMD", 0xa00f11});  // Milan
  ASSERT_TRUE(c.Handle(PutMachineConfig{m, /*sets_cpu_template=*/true}).ok());
  ASSERT_TRUE(c.Handle(PutMachineConfig{MachineConfig{}}).ok());
  EXPECT_EQ(c.config().machine.cpu_template, t2a) << "no cpu_template field: kept";
  CpuTemplate custom;
  custom.msr_modifiers = {{0x10a, {1, 0}}};
  ASSERT_TRUE(c.Handle(PutCpuConfig{custom}).ok());
  EXPECT_EQ(c.config().machine.cpu_template, StaticCpuTemplate::kNone);
  PatchMachineConfig patch;
  patch.cpu_template = t2a;
  ASSERT_TRUE(c.Handle(patch).ok());
  EXPECT_FALSE(c.config().cpu_config) << "the static one replaced it";
  ASSERT_TRUE(c.Handle(PutCpuConfig{CpuTemplate{}}).ok());
  EXPECT_EQ(c.config().machine.cpu_template, StaticCpuTemplate::kNone) << "even {} replaces it";
}

// Its file is opened at the PUT, as a drive's; one root device among pmem
// devices and drives, whichever comes second refused.
TEST(PreBootControllerTest, PmemDevicesAreCheckedAtThePut) {
  PreBootController c{VmConfig{}};
  std::string file = ::testing::TempDir() + "/pmem-put." + std::to_string(getpid());
  { std::ofstream(file) << "x"; }
  ASSERT_TRUE(c.Handle(PutPmem{{"p0", file, /*root_device=*/true}}).ok());
  ASSERT_TRUE(c.Handle(PutPmem{{"p0", file, /*root_device=*/true}}).ok()) << "replaced by id";
  EXPECT_EQ(c.config().pmem.size(), 1u);
  absl::StatusOr<VmmResult> root = c.Handle(PutDrive{Drive("rootfs", true)});
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.status().message().find("Attempt to add block as a root device while the root "
                                         "device defined as a pmem device"),
            std::string::npos);
  absl::StatusOr<VmmResult> missing = c.Handle(PutPmem{{"p1", "/nonexistent/pmem"}});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("pmem[p1].path_on_host /nonexistent/pmem"),
            std::string::npos)
      << missing.status();
  EXPECT_EQ(c.config().pmem.size(), 1u) << "a refused device is not kept";
  EXPECT_FALSE(c.Handle(PatchPmem{"p0", {}}).ok()) << "a PATCH waits for the start";
  unlink(file.c_str());
}

TEST(PreBootControllerTest, DrivesAreReplacedByIdAndOneRootAtMost) {
  PreBootController c{VmConfig{}};
  ASSERT_TRUE(c.Handle(PutDrive{Drive("rootfs", true)}).ok());
  ASSERT_TRUE(c.Handle(PutDrive{Drive("data")}).ok());
  DriveConfig again = Drive("data");
  again.path_on_host = "/dev/zero";
  ASSERT_TRUE(c.Handle(PutDrive{again}).ok());
  ASSERT_EQ(c.config().drives.size(), 2u);
  EXPECT_EQ(c.config().drives[1].path_on_host, "/dev/zero");

  absl::StatusOr<VmmResult> second_root = c.Handle(PutDrive{Drive("root2", true)});
  ASSERT_FALSE(second_root.ok());
  EXPECT_EQ(second_root.status().message(),
            "Drive config error: A root block device already exists! (drives[rootfs] is the "
            "root device)");
  EXPECT_EQ(c.config().drives.size(), 2u);
  ASSERT_TRUE(c.Handle(PutDrive{Drive("rootfs", true)}).ok()) << "the root itself, again";
}

// Firecracker opens the files when they are given, with its messages.
TEST(PreBootControllerTest, FilesAreOpenedWhenGiven) {
  PreBootController c{VmConfig{}};
  BootSourceConfig boot;
  boot.kernel_image_path = "/nonexistent/vmlinux";
  absl::StatusOr<VmmResult> r = c.Handle(PutBootSource{boot});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "Boot source error: The kernel file cannot be opened: No such file or directory (os "
            "error 2) (boot-source.kernel_image_path '/nonexistent/vmlinux')");
  boot.kernel_image_path = "/dev/null";
  boot.initrd_path = "/nonexistent/initrd";
  r = c.Handle(PutBootSource{boot});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "Boot source error: The initrd file cannot be opened due to invalid path or invalid "
            "permissions. No such file or directory (os error 2) (boot-source.initrd_path "
            "'/nonexistent/initrd')");
  EXPECT_FALSE(c.config().boot_source) << "refused: nothing kept";
  boot.initrd_path = "/dev/null";
  ASSERT_TRUE(c.Handle(PutBootSource{boot}).ok());

  DriveConfig d = Drive("data");
  d.path_on_host = "/nonexistent/disk.img";
  r = c.Handle(PutDrive{d});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "Drive config error: Unable to create the virtio block device: Virtio backend "
            "error: Error manipulating the backing file: No such file or directory (os error 2) "
            "/nonexistent/disk.img (drives[data].path_on_host)");
  EXPECT_TRUE(c.config().drives.empty());
  // A drive is opened read-write unless it is read-only.
  char dir[] = "/tmp/ember-preboot-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  d.path_on_host = std::string(dir) + "/ro.img";
  close(open(d.path_on_host.c_str(), O_CREAT | O_WRONLY, 0400));
  if (geteuid() != 0) {  // root opens it anyway
    r = c.Handle(PutDrive{d});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("Permission denied (os error 13)"), std::string::npos);
  }
  d.is_read_only = true;
  EXPECT_TRUE(c.Handle(PutDrive{d}).ok());
  unlink(d.path_on_host.c_str());
  rmdir(dir);
}

TEST(PreBootControllerTest, NetworkInterfacesNeedUniqueTaps) {
  PreBootController c{VmConfig{}};
  ASSERT_TRUE(c.Handle(PutNetworkInterface{Net("eth0", "tap0")}).ok());
  EXPECT_FALSE(c.Handle(PutNetworkInterface{Net("eth1", "tap0")}).ok());
  ASSERT_TRUE(c.Handle(PutNetworkInterface{Net("eth0", "tap1")}).ok()) << "replaces eth0";
  ASSERT_EQ(c.config().net.size(), 1u);
  EXPECT_EQ(c.config().net[0].host_dev_name, "tap1");
}

TEST(PreBootControllerTest, MmdsConfigNamesExistingInterfaces) {
  PreBootController c{VmConfig{}};
  MmdsConfig m;
  m.network_interfaces = {"eth0"};
  absl::StatusOr<VmmResult> r = c.Handle(PutMmdsConfig{m});
  EXPECT_NE(r.status().message().find("does not correspond to any existing network interface"),
            std::string::npos)
      << r.status();
  ASSERT_TRUE(c.Handle(PutNetworkInterface{Net("eth0", "tap0")}).ok());
  m.network_interfaces = {};
  r = c.Handle(PutMmdsConfig{m});
  EXPECT_NE(r.status().message().find("is empty"), std::string::npos) << r.status();
  m.network_interfaces = {"eth0"};
  m.ipv4_address = 0x0a000001;  // 10.0.0.1
  r = c.Handle(PutMmdsConfig{m});
  EXPECT_EQ(r.status().message(), "The MMDS IPv4 address is not link local.");
  EXPECT_FALSE(c.config().mmds) << "refused configurations change nothing";
  m.ipv4_address = 0xa9fe0101;  // 169.254.1.1
  m.version = MmdsConfig::Version::kV2;
  ASSERT_TRUE(c.Handle(PutMmdsConfig{m}).ok());
  ASSERT_TRUE(c.config().mmds);
  EXPECT_EQ(c.config().mmds->version, MmdsConfig::Version::kV2);
  EXPECT_EQ(c.config().mmds->ipv4_address, 0xa9fe0101u);
}

TEST(PreBootControllerTest, AGuestMacIsOnOneInterfaceOnly) {
  PreBootController c{VmConfig{}};
  NetConfig a = Net("eth0", "tap0"), b = Net("eth1", "tap1");
  a.guest_mac = b.guest_mac = std::array<uint8_t, 6>{0x06, 0, 0, 0, 0, 0xab};
  ASSERT_TRUE(c.Handle(PutNetworkInterface{a}).ok());
  ASSERT_TRUE(c.Handle(PutNetworkInterface{a}).ok()) << "the same interface again";
  absl::StatusOr<VmmResult> r = c.Handle(PutNetworkInterface{b});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "Network config error: The MAC address is already in use: 06:00:00:00:00:ab "
            "(network-interfaces[eth0] has it)");
  EXPECT_EQ(c.config().net.size(), 1u);
  b.guest_mac->back() = 0xac;
  EXPECT_TRUE(c.Handle(PutNetworkInterface{b}).ok());
}

TEST(PreBootControllerTest, BalloonFitsTheGuest) {
  VmConfig config;
  config.machine.mem_size_mib = 128;
  PreBootController c{config};
  EXPECT_FALSE(c.Handle(GetBalloon{}).ok());
  BalloonConfig b;
  b.amount_mib = 256;
  EXPECT_FALSE(c.Handle(PutBalloon{b}).ok()) << "larger than the guest";
  b.amount_mib = 64;
  b.stats_polling_interval_s = 5;
  ASSERT_TRUE(c.Handle(PutBalloon{b}).ok());
  absl::StatusOr<VmmResult> got = c.Handle(GetBalloon{});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::get<BalloonConfig>(*got).amount_mib, 64u);
  EXPECT_EQ(std::get<BalloonConfig>(*got).stats_polling_interval_s, 5u);
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
  boot.kernel_image_path = "/dev/null";
  boot.boot_args = "console=ttyS0";
  ASSERT_TRUE(c.Handle(PutBootSource{boot}).ok());
  SerialConfig serial;
  serial.serial_out_path = "/tmp/console";
  ASSERT_TRUE(c.Handle(PutSerial{serial}).ok());
  absl::StatusOr<VmmResult> got = c.Handle(GetVmConfig{});
  ASSERT_TRUE(got.ok());
  const VmConfig& config = std::get<VmConfig>(*got);
  ASSERT_TRUE(config.boot_source.has_value());
  EXPECT_EQ(config.boot_source->kernel_image_path, "/dev/null");
  EXPECT_EQ(config.serial.serial_out_path, "/tmp/console");
}

// As Firecracker: PATCHes of devices and the balloon, and all that acts
// on a live guest, wait for the start; before it a PUT sets the device.
TEST(PreBootControllerTest, WhatNeedsARunningMicroVmIsRefused) {
  VmConfig config;
  config.drives.push_back(Drive("d"));
  config.net.push_back(Net("eth0", "tap0"));
  config.balloon = BalloonConfig{};
  PreBootController c{config};
  const VmmAction live[] = {SendCtrlAltDel{},
                            PatchVmState{true},
                            CreateSnapshot{"/s", "/m", false},
                            PatchDrive{"d", "/dev/zero"},
                            PatchNetworkInterface{"eth0"},
                            PatchBalloon{0},
                            PatchBalloonStats{1},
                            GetBalloonStats{}};
  for (const VmmAction& a : live) {
    absl::StatusOr<VmmResult> r = c.Handle(a);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(r.status().message(),
              "The requested operation is not supported before starting the microVM.");
  }
  EXPECT_EQ(c.config().drives[0].path_on_host, "/dev/null") << "nothing changed";
}

}  // namespace
}  // namespace ember
