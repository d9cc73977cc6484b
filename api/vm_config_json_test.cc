#include "api/vm_config_json.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ember::api {
namespace {

constexpr char kBoot[] = R"("boot-source": {"kernel_image_path": "/k"})";

std::string Config(const std::string& machine) {
  return std::string("{") + kBoot + R"(, "machine-config": )" + machine + "}";
}

// Expects a refusal whose message contains `needle`.
void ExpectRefused(const std::string& json, const std::string& needle) {
  auto c = ParseVmConfig(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(needle), std::string::npos)
      << "message '" << c.status().message() << "' lacks '" << needle << "'";
}

TEST(VmConfigJsonTest, ParsesAFirecrackerConfig) {
  auto c = ParseVmConfig(R"({
    "boot-source": {"kernel_image_path": "vmlinux", "initrd_path": "initrd.cpio",
                    "boot_args": "console=ttyS0"},
    "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false,
                       "track_dirty_pages": true, "huge_pages": "None"},
    "drives": [], "network-interfaces": []
  })");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->boot_source);
  EXPECT_EQ(c->boot_source->kernel_image_path, "vmlinux");
  EXPECT_EQ(c->boot_source->initrd_path, "initrd.cpio");
  EXPECT_EQ(c->boot_source->boot_args, "console=ttyS0");
  EXPECT_EQ(c->machine.vcpu_count, 2u);
  EXPECT_EQ(c->machine.mem_size_mib, 256u);
  EXPECT_TRUE(c->machine.track_dirty_pages);
}

TEST(VmConfigJsonTest, DefaultsWithoutMachineConfig) {
  auto c = ParseVmConfig(std::string("{") + kBoot + "}");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->machine.vcpu_count, 1u);
  EXPECT_EQ(c->machine.mem_size_mib, 128u);
  EXPECT_FALSE(c->boot_source->boot_args);
}

// Firecracker refuses these at PUT /boot-source; they would not fit in,
// or not be read the same from, the guest's command line.
TEST(VmConfigJsonTest, BootArgsAreFirecrackersCommandLine) {
  auto boot = [](const std::string& args) {
    return R"({"boot-source": {"kernel_image_path": "/k", "boot_args": ")" + args + R"("}})";
  };
  EXPECT_TRUE(ParseVmConfig(boot(std::string(kMaxBootArgsBytes, 'a'))).ok());
  ExpectRefused(boot(std::string(kMaxBootArgsBytes + 1, 'a')),
                "Inserting string would make command line too long. (boot-source.boot_args is "
                "2048 bytes; the limit is 2047)");
  ExpectRefused(boot("console=ttyS0\\nquiet"),  // JSON's \n: a newline
                "String contains a non-printable ASCII character. (boot-source.boot_args has "
                "byte 0x0a at offset 13)");
  ExpectRefused(boot("a\\u00e9"), "byte 0xc3 at offset 1");
  ExpectRefused(boot("a\\tb"), "byte 0x09 at offset 1");
}

TEST(VmConfigJsonTest, MalformedJson) {
  ExpectRefused("{", "malformed JSON at byte 1");
  ExpectRefused(R"({"boot-source": {"kernel_image_path": "/k",}})", "malformed JSON");
  ExpectRefused(R"({} {})", "malformed JSON");
  ExpectRefused("[1, 2]", "must be an object");
  ExpectRefused("", "malformed JSON");
}

// A --config-file, or the configuration in a snapshot's state file, nested
// a million deep overflowed the stack of the thread that parsed it.
TEST(VmConfigJsonTest, NestingIsBounded) {
  ExpectRefused(std::string(1 << 20, '['), "JSON nested deeper than 64 levels");
  ExpectRefused(std::string("{") + kBoot + R"(, "machine-config": {"vcpu_count": )" +
                    std::string(1 << 20, '[') + std::string(1 << 20, ']') + "}}",
                "JSON nested deeper than 64 levels");
}

TEST(VmConfigJsonTest, UnknownFieldsAreNamed) {
  ExpectRefused(std::string("{") + kBoot + R"(, "bogus": 1})", "unknown field 'bogus'");
  ExpectRefused(R"({"boot-source": {"kernel_image_path": "/k", "initrd": "x"}})",
                "boot-source: unknown field 'initrd'");
  ExpectRefused(Config(R"({"vcpu_count": 1, "mem_size_mib": 1, "vcpus": 2})"),
                "machine-config: unknown field 'vcpus'");
}

TEST(VmConfigJsonTest, WrongTypesAreNamed) {
  ExpectRefused(Config(R"({"vcpu_count": "2", "mem_size_mib": 128})"),
                "machine-config.vcpu_count must be an integer");
  ExpectRefused(Config(R"({"vcpu_count": 1.5, "mem_size_mib": 128})"),
                "machine-config.vcpu_count must be an integer");
  ExpectRefused(Config(R"({"vcpu_count": 1, "mem_size_mib": 128, "smt": "no"})"),
                "machine-config.smt must be true or false");
  ExpectRefused(R"({"boot-source": {"kernel_image_path": 7}})",
                "boot-source.kernel_image_path must be a string");
  ExpectRefused(R"({"boot-source": "vmlinux"})", "boot-source must be a JSON object");
}

TEST(VmConfigJsonTest, OutOfRangeValues) {
  ExpectRefused(Config(R"({"vcpu_count": 0, "mem_size_mib": 128})"),
                "machine-config.vcpu_count must be between 1 and 32, got 0");
  ExpectRefused(Config(R"({"vcpu_count": 33, "mem_size_mib": 128})"),
                "machine-config.vcpu_count must be between 1 and 32, got 33");
  ExpectRefused(Config(R"({"vcpu_count": -1, "mem_size_mib": 128})"), "got -1");
  ExpectRefused(Config(R"({"vcpu_count": 1, "mem_size_mib": 0})"),
                "machine-config.mem_size_mib must be between 1");
  ExpectRefused(Config(R"({"vcpu_count": 1, "mem_size_mib": 18446744073709551615})"),
                "machine-config.mem_size_mib must be between 1");
}

TEST(VmConfigJsonTest, MissingRequiredFields) {
  ExpectRefused(Config(R"({"vcpu_count": 1})"), "machine-config.mem_size_mib is required");
  ExpectRefused(R"({"boot-source": {}})", "boot-source.kernel_image_path is required");
}

// An interface eth0 with `limiters` (its rx_/tx_rate_limiter fields).
std::string NetWith(const std::string& limiters) {
  return std::string("{") + kBoot +
         R"(, "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", )" + limiters +
         "}]}";
}

TEST(VmConfigJsonTest, NetworkLimitersRoundTrip) {
  // Kata sends an empty rx_rate_limiter even with rate limiting off.
  auto c = ParseVmConfig(NetWith(R"("rx_rate_limiter": {}, "tx_rate_limiter": null)"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->net[0].rx_rate_limiter);
  EXPECT_FALSE(c->net[0].tx_rate_limiter);
  c = ParseVmConfig(NetWith(
      R"("rx_rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100,
                                           "one_time_burst": 4096}},
         "tx_rate_limiter": {"ops": {"size": 10, "refill_time": 1000},
                             "bandwidth": {"size": 0, "refill_time": 0}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->net[0].rx_rate_limiter && c->net[0].tx_rate_limiter);
  EXPECT_EQ(c->net[0].rx_rate_limiter->bandwidth, (TokenBucketConfig{1048576, 100, 4096}));
  EXPECT_FALSE(c->net[0].rx_rate_limiter->ops);
  EXPECT_EQ(c->net[0].tx_rate_limiter->ops, (TokenBucketConfig{10, 1000, 0}));
  EXPECT_FALSE(c->net[0].tx_rate_limiter->bandwidth) << "0 and 0: no bucket";
  // GET /vm/config and snapshots carry them.
  std::string json = VmConfigToJson(*c);
  EXPECT_NE(json.find(R"("rx_rate_limiter":{"bandwidth":{"size":1048576,)"), std::string::npos)
      << json;
  auto again = ParseVmConfig(json);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->net[0].rx_rate_limiter, c->net[0].rx_rate_limiter);
  EXPECT_EQ(again->net[0].tx_rate_limiter, c->net[0].tx_rate_limiter);
}

TEST(VmConfigJsonTest, BadNetworkLimitersAreRefusedByName) {
  ExpectRefused(NetWith(R"("rx_rate_limiter": {"ops": {"size": -1, "refill_time": 100}})"),
                "network-interfaces[eth0].rx_rate_limiter.ops.size");
  // As Firecracker: a zero size or refill time, or a refill time whose ns
  // overflow, turn the bucket off.
  for (const char* off : {R"("tx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 100}})",
                          R"("tx_rate_limiter": {"bandwidth": {"size": 10, "refill_time": 0}})",
                          R"("tx_rate_limiter": {"bandwidth": {"size": 10,)"
                          R"( "refill_time": 18446744073709551615}})"}) {
    absl::StatusOr<VmConfig> c = ParseVmConfig(NetWith(off));
    ASSERT_TRUE(c.ok()) << off << ": " << c.status();
    EXPECT_FALSE(c->net[0].tx_rate_limiter && c->net[0].tx_rate_limiter->bandwidth) << off;
  }
  ExpectRefused(NetWith(R"("tx_rate_limiter": {"ops": {"size": 5, "refill_time": -3}})"),
                "network-interfaces[eth0].tx_rate_limiter.ops.refill_time");
  ExpectRefused(NetWith(R"("tx_rate_limiter": {"ops": {"size": 5}})"),
                "network-interfaces[eth0].tx_rate_limiter.ops.refill_time is required");
  ExpectRefused(NetWith(R"("rx_rate_limiter": {"bytes": {}})"),
                "network-interfaces[eth0].rx_rate_limiter: unknown field 'bytes'");
  // Firecracker's TokenBucketConfig ignores fields it does not know.
  std::string spare = R"("rx_rate_limiter": {"ops": {"size": 1, "refill_time": 1, "x": 1}})";
  EXPECT_TRUE(ParseVmConfig(NetWith(spare)).ok());
  ExpectRefused(NetWith(R"("rx_rate_limiter": 7)"), "must be a JSON object");
}

TEST(VmConfigJsonTest, VsockSectionRoundTrips) {
  auto c = ParseVmConfig(std::string("{") + kBoot +
                         R"(, "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "/run/v.sock"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->vsock.has_value());
  EXPECT_EQ(c->vsock->vsock_id, "vsock0");
  EXPECT_EQ(c->vsock->guest_cid, 3u);
  EXPECT_EQ(c->vsock->uds_path, "/run/v.sock");
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->vsock->uds_path, "/run/v.sock");
  EXPECT_EQ(again->vsock->vsock_id, "vsock0");
  // vsock_id is optional (deprecated in Firecracker).
  EXPECT_TRUE(ParseVmConfig(std::string("{") + kBoot +
                            R"(, "vsock": {"guest_cid": 9, "uds_path": "v"}})").ok());
}

TEST(VmConfigJsonTest, BadVsockIsRefused) {
  ExpectRefused(std::string("{") + kBoot + R"(, "vsock": {"guest_cid": 2, "uds_path": "v"}})",
                "vsock.guest_cid 2 is reserved (0-2); use 3 or more");
  ExpectRefused(std::string("{") + kBoot + R"(, "vsock": {"guest_cid": 3}})",
                "vsock.uds_path is required");
  ExpectRefused(std::string("{") + kBoot + R"(, "vsock": {"guest_cid": 3, "uds_path": ""}})",
                "vsock.uds_path must not be empty");
  ExpectRefused(std::string("{") + kBoot + R"(, "vsock": {"guest_cid": 4294967296, "uds_path": "v"}})",
                "vsock.guest_cid");
  ExpectRefused(std::string("{") + kBoot + R"(, "vsock": {"guest_cid": 3, "uds_path": ")" +
                    std::string(108, 'a') + R"("}})",
                "at most 107");
}

TEST(VmConfigJsonTest, MemoryHotplugTakesFirecrackersDefaultsAndRules) {
  absl::StatusOr<VmConfig> c =
      ParseVmConfig(std::string("{") + kBoot + R"(, "memory-hotplug": {"total_size_mib": 1024}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->memory_hotplug);
  EXPECT_EQ(*c->memory_hotplug, (MemoryHotplugConfig{1024, 128, 2}));
  std::string out = VmConfigToJson(*c);
  EXPECT_NE(out.find(R"("memory-hotplug":{"total_size_mib":1024,"slot_size_mib":128,)"
                     R"("block_size_mib":2})"),
            std::string::npos)
      << out;
  ExpectRefused(std::string("{") + kBoot + R"(, "memory-hotplug": {"slot_size_mib": 128}})",
                "total_size_mib");
  ExpectRefused(std::string("{") + kBoot + R"(, "memory-hotplug": {"total_size_mib": 1}})",
                "memory-hotplug.total_size_mib 1 must be a non-zero multiple of slot_size_mib");
  ExpectRefused(std::string("{") + kBoot +
                    R"(, "memory-hotplug": {"total_size_mib": 1024, "block_size_mib": 3}})",
                "block_size_mib 3 must be a power of 2");
  ExpectRefused(std::string("{") + kBoot +
                    R"(, "memory-hotplug": {"total_size_mib": 1024, "hot": 1}})",
                "hot");
}

std::string WithMmds(const std::string& mmds) {
  return std::string("{") + kBoot +
         R"(, "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],)" +
         R"( "mmds-config": )" + mmds + "}";
}

TEST(VmConfigJsonTest, MmdsConfigIsReadCheckedAndWrittenBack) {
  auto c = ParseVmConfig(WithMmds(R"({"network_interfaces": ["eth0"]})"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->mmds);
  EXPECT_EQ(c->mmds->version, MmdsConfig::Version::kV1);
  EXPECT_EQ(c->mmds->ipv4_address, 0xa9fea9feu);
  std::string json = VmConfigToJson(*c);
  EXPECT_NE(json.find(R"("mmds-config":{"version":"V1","network_interfaces":["eth0"],)"
                      R"("ipv4_address":"169.254.169.254","imds_compat":false})"),
            std::string::npos)
      << json;
  c = ParseVmConfig(WithMmds(
      R"({"network_interfaces": ["eth0"], "version": "V2", "ipv4_address": "169.254.7.8",)"
      R"( "imds_compat": true})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->mmds);
  EXPECT_EQ(again->mmds->version, MmdsConfig::Version::kV2);
  EXPECT_EQ(again->mmds->ipv4_address, 0xa9fe0708u);
  EXPECT_TRUE(again->mmds->imds_compat);
  EXPECT_TRUE(ParseVmConfig(WithMmds("null")).ok());

  ExpectRefused(WithMmds(R"({"network_interfaces": []})"),
                "The list of network interface IDs that allow forwarding MMDS requests is empty.");
  ExpectRefused(WithMmds(R"({"network_interfaces": ["eth1"]})"),
                "does not correspond to any existing network interface ('eth1')");
  ExpectRefused(WithMmds(R"({"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"})"),
                "The MMDS IPv4 address is not link local.");
  ExpectRefused(WithMmds(R"({"network_interfaces": ["eth0"], "ipv4_address": "169.254.0.9"})"),
                "not link local");
  ExpectRefused(WithMmds(R"({"network_interfaces": ["eth0"], "ipv4_address": "169.254.255.1"})"),
                "not link local");
  ExpectRefused(WithMmds(R"({"network_interfaces": ["eth0"], "version": "v2"})"),
                "mmds-config.version 'v2' must be");
}

// A drive with `limiter` as its rate_limiter.
std::string DriveWith(const std::string& limiter) {
  return std::string("{") + kBoot +
         R"(, "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
             "rate_limiter": )" + limiter + "}]}";
}

// Firecracker keeps its root drive first, whenever it was put.
TEST(VmConfigJsonTest, TheRootDriveIsListedFirst) {
  auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "drives": [
      {"drive_id": "a", "path_on_host": "/a", "is_root_device": false},
      {"drive_id": "r", "path_on_host": "/r", "is_root_device": true},
      {"drive_id": "b", "path_on_host": "/b", "is_root_device": false}]})");
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  std::vector<std::string> ids;
  for (const DriveConfig& d : again->drives) ids.push_back(d.drive_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"r", "a", "b"}));
}

TEST(VmConfigJsonTest, RateLimitersRoundTrip) {
  auto c = ParseVmConfig(DriveWith(
      R"({"bandwidth": {"size": 1048576, "refill_time": 100, "one_time_burst": 4096},
          "ops": {"size": 10, "refill_time": 1000}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->drives[0].rate_limiter);
  EXPECT_EQ(c->drives[0].rate_limiter->bandwidth, (TokenBucketConfig{1048576, 100, 4096}));
  EXPECT_EQ(c->drives[0].rate_limiter->ops, (TokenBucketConfig{10, 1000, 0}));
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->drives[0].rate_limiter, c->drives[0].rate_limiter);
  EXPECT_NE(VmConfigToJson(*c).find(R"("rate_limiter":{"bandwidth":{"size":1048576)"),
            std::string::npos);
  // {} and null, and buckets of 0 and 0, limit nothing (Kata sends {}).
  for (const char* none : {"{}", "null", R"({"ops": {"size": 0, "refill_time": 0}})",
                           R"({"bandwidth": null})"}) {
    c = ParseVmConfig(DriveWith(none));
    ASSERT_TRUE(c.ok()) << none << ": " << c.status();
    EXPECT_FALSE(c->drives[0].rate_limiter) << none;
  }
  c = ParseVmConfig(std::string("{") + kBoot +
                    R"(, "entropy": {"rate_limiter": {"ops": {"size": 5, "refill_time": 10}}}})");
  ASSERT_TRUE(c.ok()) << c.status();
  again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->entropy->rate_limiter->ops, (TokenBucketConfig{5, 10, 0}));
}

TEST(VmConfigJsonTest, BadRateLimitersAreRefusedByName) {
  ExpectRefused(DriveWith(R"({"bandwidth": {"size": -1, "refill_time": 100}})"),
                "drives[d].rate_limiter.bandwidth.size");
  ExpectRefused(DriveWith(R"({"ops": {"size": 10}})"),
                "drives[d].rate_limiter.ops.refill_time is required");
  EXPECT_TRUE(ParseVmConfig(DriveWith(R"({"ops": {"size": 10, "refill_time": 1, "burst": 5}})"))
                  .ok())
      << "a bucket's unknown field is ignored, as by Firecracker";
  ExpectRefused(DriveWith(R"({"iops": {}})"), "unknown field 'iops'");
  ExpectRefused(DriveWith(R"({"ops": {"size": 10, "refill_time": 18446744073709551616}})"),
                "drives[d].rate_limiter.ops.refill_time");
  ExpectRefused(DriveWith(R"({"ops": 5})"), "must be a JSON object");
  ExpectRefused(std::string("{") + kBoot +
                    R"(, "entropy": {"rate_limiter": {"bandwidth": {"size": 1.5, "refill_time": 1}}}})",
                "entropy.rate_limiter.bandwidth.size");
}

TEST(VmConfigJsonTest, EntropySectionRoundTrips) {
  auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "entropy": {}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->entropy.has_value());
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->entropy.has_value());
  EXPECT_FALSE(ParseVmConfig(VmConfigToJson(VmConfig{}))->entropy.has_value());
  c = ParseVmConfig(std::string("{") + kBoot + R"(, "entropy": {"rate_limiter": null}})");
  EXPECT_TRUE(c.ok() && c->entropy.has_value()) << c.status();
  ExpectRefused(std::string("{") + kBoot + R"(, "entropy": {"bogus": 1}})",
                "entropy: unknown field 'bogus'");
  ExpectRefused(std::string("{") + kBoot + R"(, "entropy": 3})", "entropy must be a JSON object");
}

// Firecracker's pmem section: read, written back by GET /vm/config, and
// one root device among pmem devices and drives.
TEST(VmConfigJsonTest, Pmem) {
  auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "pmem": [
      {"id": "p0", "path_on_host": "/p0", "root_device": true, "read_only": true},
      {"id": "p1", "path_on_host": "/p1",
       "rate_limiter": {"ops": {"size": 10, "refill_time": 1000}}}]})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->pmem.size(), 2u);
  EXPECT_TRUE(c->pmem[0].root_device && c->pmem[0].read_only);
  EXPECT_FALSE(c->pmem[1].root_device || c->pmem[1].read_only);
  ASSERT_TRUE(c->pmem[1].rate_limiter && c->pmem[1].rate_limiter->ops);
  EXPECT_EQ(c->pmem[1].rate_limiter->ops->size, 10u);
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->pmem, c->pmem);
  ExpectRefused(std::string("{") + kBoot + R"(, "pmem": [{"id": "p0"}]})",
                "path_on_host");
  ExpectRefused(std::string("{") + kBoot + R"(, "pmem": [{"id": "p0", "path_on_host": "/a"},
                {"id": "p0", "path_on_host": "/b"}]})", "pmem: id 'p0' is used twice");
  ExpectRefused(std::string("{") + kBoot + R"(, "drives": [{"drive_id": "r", "path_on_host": "/r",
                "is_root_device": true}], "pmem": [{"id": "p0", "path_on_host": "/a",
                "root_device": true}]})",
                "Attempt to add pmem as a root device while the root device defined as a block");
  ExpectRefused(std::string("{") + kBoot + R"(, "pmem": [{"id": "p0", "path_on_host": "/a",
                "root_device": true}, {"id": "p1", "path_on_host": "/b", "root_device": true}]})",
                "Pmem config error: A root pmem device already exist.");
  ExpectRefused(std::string("{") + kBoot + R"(, "pmem": {"id": "p0"}})", "pmem must be a JSON array");
}

// The host's model is checked when the template is set or used, not when
// it is read: a snapshot's configuration may come from another host.
TEST(VmConfigJsonTest, StaticCpuTemplates) {
  auto c = ParseVmConfig(Config(R"({"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": "T2"})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->machine.cpu_template, StaticCpuTemplate::kT2);
  EXPECT_NE(MachineConfigToJson(c->machine).find(R"("cpu_template":"T2")"), std::string::npos);
  auto again = ParseVmConfig(VmConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->machine.cpu_template, StaticCpuTemplate::kT2);
  // As Firecracker writes it: only a static template.
  EXPECT_EQ(MachineConfigToJson(MachineConfig{}).find("cpu_template"), std::string::npos);
  ExpectRefused(Config(R"({"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": "t2"})"),
                "machine-config.cpu_template 't2' must be \"C3\", \"T2\"");
  // cpu-config is applied after machine-config, as in Firecracker: it wins.
  c = ParseVmConfig(std::string("{") + kBoot + R"(, "machine-config": {"vcpu_count": 1,)" +
                    R"( "mem_size_mib": 128, "cpu_template": "C3"}, "cpu-config": {}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->machine.cpu_template, StaticCpuTemplate::kNone);
}

TEST(VmConfigJsonTest, Smt) {
  auto c = ParseVmConfig(Config(R"({"vcpu_count": 4, "mem_size_mib": 128, "smt": true})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->machine.smt);
  EXPECT_NE(MachineConfigToJson(c->machine).find(R"("smt":true)"), std::string::npos);
  EXPECT_TRUE(ValidateMachineConfig(c->machine).ok());
  c->machine.vcpu_count = 3;
  EXPECT_NE(ValidateMachineConfig(c->machine).message().find("must be 1 or even"),
            std::string::npos);
  c->machine.vcpu_count = 1;
  EXPECT_TRUE(ValidateMachineConfig(c->machine).ok());
}

TEST(VmConfigJsonTest, HugePages) {
  for (const char* name : {"None", "Transparent", "2M"}) {
    auto c = ParseVmConfig(
        Config(absl::StrCat(R"({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": ")", name,
                            R"("})")));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_STREQ(HugePagesName(c->machine.huge_pages), name);
    EXPECT_NE(MachineConfigToJson(c->machine).find(absl::StrCat(R"("huge_pages":")", name)),
              std::string::npos);
  }
  ExpectRefused(Config(R"({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "1G"})"),
                R"(machine-config.huge_pages '1G' must be "None", "Transparent" or "2M")");
  // Whole huge pages only; the check is the VMM's, as for the API's PATCH.
  auto odd = ParseVmConfig(Config(R"({"vcpu_count": 1, "mem_size_mib": 129, "huge_pages": "2M"})"));
  ASSERT_TRUE(odd.ok()) << odd.status();
  absl::Status st = ValidateMachineConfig(odd->machine);
  EXPECT_NE(st.message().find(R"(mem_size_mib 129 must be a multiple of 2 with huge_pages "2M")"),
            std::string::npos)
      << st;
  odd->machine.huge_pages = HugePages::kNone;
  EXPECT_TRUE(ValidateMachineConfig(odd->machine).ok());
}

TEST(VmConfigJsonTest, SerialSection) {
  auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "serial": {"serial_out_path": "/tmp/c"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->serial.serial_out_path, "/tmp/c");
  ExpectRefused(std::string("{") + kBoot + R"(, "serial": {"serial_out_path": 1}})",
                "serial.serial_out_path must be a string");
  c = ParseVmConfig(std::string("{") + kBoot +
                    R"(, "serial": {"rate_limiter": {"size": 4096, "refill_time": 100}}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->serial.rate_limiter);
  EXPECT_EQ(c->serial.rate_limiter->size, 4096u);
  EXPECT_EQ(c->serial.rate_limiter->refill_time_ms, 100u);
  // One bucket, not a RateLimiter's two.
  ExpectRefused(std::string("{") + kBoot + R"(, "serial": {"rate_limiter": {"bandwidth": {}}}})",
                "serial.rate_limiter.size is required");
  std::string spare =
      R"(, "serial": {"rate_limiter": {"size": 1, "refill_time": 1, "ops": {}}}})";
  EXPECT_TRUE(ParseVmConfig(std::string("{") + kBoot + spare).ok())
      << "a bucket's unknown field is ignored, as by Firecracker";
  ExpectRefused(std::string("{") + kBoot + R"(, "serial": {"rate_limiter": {"size": 1}}})",
                "serial.rate_limiter.refill_time");
  ExpectRefused(std::string("{") + kBoot + R"(, "serial": {"path": "x"}})",
                "serial: unknown field 'path'");
}

std::string Drives(const std::string& items) {
  return std::string("{") + kBoot + R"(, "drives": [)" + items + "]}";
}

TEST(VmConfigJsonTest, Drives) {
  auto c = ParseVmConfig(Drives(
      R"({"drive_id": "data", "path_on_host": "d.img", "is_root_device": false,
          "is_read_only": true, "cache_type": "Writeback", "io_engine": "Async"},
         {"drive_id": "rootfs", "path_on_host": "r.ext4", "is_root_device": true,
          "partuuid": "abcd-01"})"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->drives.size(), 2u);
  EXPECT_EQ(c->drives[0].drive_id, "data");
  EXPECT_TRUE(c->drives[0].is_read_only);
  EXPECT_EQ(c->drives[0].cache_type, CacheType::kWriteback);
  EXPECT_EQ(c->drives[0].io_engine, IoEngine::kAsync);
  EXPECT_EQ(c->drives[1].io_engine, IoEngine::kSync);
  EXPECT_TRUE(c->drives[1].is_root_device);
  EXPECT_EQ(c->drives[1].partuuid, "abcd-01");
  EXPECT_EQ(c->drives[1].cache_type, CacheType::kUnsafe);
}

TEST(VmConfigJsonTest, BadDrives) {
  ExpectRefused(Drives(R"({"drive_id": "a", "path_on_host": "x"})"),
                "drives[].is_root_device is required");
  ExpectRefused(Drives(R"({"drive_id": "a", "is_root_device": false})"),
                "drives[].path_on_host is required");
  ExpectRefused(Drives(R"({"drive_id": "a b", "path_on_host": "x", "is_root_device": false})"),
                "drive_id 'a b' must be");
  ExpectRefused(Drives(R"({"drive_id": "a", "path_on_host": "x", "is_root_device": true},
                          {"drive_id": "a", "path_on_host": "y", "is_root_device": false})"),
                "drive_id 'a' is used twice");
  ExpectRefused(Drives(R"({"drive_id": "a", "path_on_host": "x", "is_root_device": true},
                          {"drive_id": "b", "path_on_host": "y", "is_root_device": true})"),
                "only one drive");
  ExpectRefused(Drives(R"({"drive_id": "a", "path_on_host": "x", "is_root_device": false,
                           "cache_type": "None"})"),
                "drives[a].cache_type must be");
  ExpectRefused(Drives(R"({"drive_id": "a", "path_on_host": "x", "is_root_device": false,
                           "io_engine": "Uring"})"),
                "drives[a].io_engine must be");
  ExpectRefused(Drives(R"({"drive_id": "a", "path_on_host": "x", "is_root_device": false,
                           "sockets": 1})"),
                "drives[]: unknown field 'sockets'");
  ExpectRefused(std::string("{") + kBoot + R"(, "drives": {"drive_id": "a"}})",
                "drives must be a JSON array");
}

TEST(VmConfigJsonTest, NetworkInterfaces) {
  auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "network-interfaces": [
      {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "aa:FC:00:00:00:0f"},
      {"iface_id": "eth1", "host_dev_name": "tap1"}]})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->net.size(), 2u);
  EXPECT_EQ((*c->net[0].guest_mac)[0], 0xaa);
  EXPECT_EQ((*c->net[0].guest_mac)[5], 0x0f);
  EXPECT_FALSE(c->net[1].guest_mac);
  auto net = [](const std::string& items) {
    return std::string("{") + kBoot + R"(, "network-interfaces": [)" + items + "]}";
  };
  ExpectRefused(net(R"({"iface_id": "eth0"})"), "network-interfaces[].host_dev_name is required");
  ExpectRefused(net(R"({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "aa:bb"})"),
                "network-interfaces[eth0].guest_mac 'aa:bb' is not six hex bytes");
  ExpectRefused(net(R"({"iface_id": "eth0", "host_dev_name": "tap0",
                        "guest_mac": "zz:FC:00:00:00:01"})"),
                "is not six hex bytes");
  ExpectRefused(net(R"({"iface_id": "eth0", "host_dev_name": "a-very-long-tap-name"})"),
                "must be 1-15 characters");
  ExpectRefused(net(R"({"iface_id": "e", "host_dev_name": "t"}, {"iface_id": "e", "host_dev_name": "u"})"),
                "iface_id 'e' is used twice");
  ExpectRefused(net(R"({"iface_id": "e", "host_dev_name": "t"}, {"iface_id": "f", "host_dev_name": "t"})"),
                "host_dev_name 't' is used twice");
}

TEST(VmConfigJsonTest, Logger) {
  auto c = ParseVmConfig(std::string("{") + kBoot +
                         R"(, "logger": {"log_path": "/tmp/l", "level": "Debug",
                                         "show_level": false, "show_log_origin": true}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->logger);
  EXPECT_EQ(c->logger->log_path, "/tmp/l");
  EXPECT_EQ(c->logger->level, "Debug");
  EXPECT_EQ(c->logger->show_level, false);
  EXPECT_EQ(c->logger->show_log_origin, true);
  EXPECT_EQ(c->logger->module, std::nullopt) << "absent: the one set stays";
  ExpectRefused(std::string("{") + kBoot + R"(, "logger": {"level": "Loud"}})",
                "logger.level 'Loud' must be");
  c = ParseVmConfig(std::string("{") + kBoot + R"(, "logger": {"module": "src/devices"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->logger->module, "src/devices");
  ExpectRefused(std::string("{") + kBoot + R"(, "logger": {"module": "vmm::devices"}})",
                "Ember filters by source path below its tree");
  ExpectRefused(std::string("{") + kBoot + R"(, "logger": {"module": "./src/vmm"}})",
                "must be a path below Ember's source tree");
}

TEST(VmConfigJsonTest, WritesWhatItReads) {
  // Firecracker's keys and order; null where it has no value.
  const std::string text =
      R"({"balloon":{"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5,)"
      R"("free_page_hinting":true,"free_page_reporting":false},)"
      R"("drives":[{"drive_id":"rootfs","partuuid":"abcd-01","is_root_device":true,)"
      R"("cache_type":"Writeback","is_read_only":true,"path_on_host":"/r.ext4",)"
      R"("rate_limiter":null,"io_engine":"Async","socket":null},)"
      R"({"drive_id":"data","partuuid":null,"is_root_device":false,"cache_type":"Unsafe",)"
      R"("is_read_only":false,"path_on_host":"/d.img","rate_limiter":null,"io_engine":"Sync",)"
      R"("socket":null}],)"
      R"("boot-source":{"kernel_image_path":"/k","initrd_path":"/i","boot_args":"console=ttyS0"},)"
      R"("cpu-config":null,"logger":null,)"
      R"("machine-config":{"vcpu_count":2,"mem_size_mib":256,"smt":false,)"
      R"("track_dirty_pages":true,"huge_pages":"None"},)"
      R"("metrics":null,"mmds-config":null,"network-interfaces":[],)"
      R"("vsock":{"guest_cid":3,"uds_path":"/v"},"entropy":{"rate_limiter":null},)"
      R"("pmem":[],"memory-hotplug":null})";
  auto c = ParseVmConfig(text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(VmConfigToJson(*c), text);
  EXPECT_EQ(MachineConfigToJson(c->machine),
            R"({"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,)"
            R"("huge_pages":"None"})");
  EXPECT_EQ(BalloonConfigToJson(*c->balloon),
            R"({"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5,)"
            R"("free_page_hinting":true,"free_page_reporting":false})");
  c->balloon->free_page_reporting = true;
  EXPECT_NE(VmConfigToJson(*c).find(R"("free_page_reporting":true)"), std::string::npos);
}

// Before any PUT Firecracker shows every key, the kernel path empty.
TEST(VmConfigJsonTest, AnEmptyConfigIsWrittenWithItsDefaults) {
  std::string text = VmConfigToJson(VmConfig());
  EXPECT_EQ(text,
            R"({"balloon":null,"drives":[],)"
            R"("boot-source":{"kernel_image_path":"","initrd_path":null,"boot_args":null},)"
            R"("cpu-config":null,"logger":null,)"
            R"("machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,)"
            R"("track_dirty_pages":false,"huge_pages":"None"},"metrics":null,)"
            R"("mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,)"
            R"("pmem":[],"memory-hotplug":null})");
  auto c = ParseVmConfig(text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->boot_source->kernel_image_path, "") << "read; opening it refuses it";
  EXPECT_FALSE(c->balloon);
  EXPECT_FALSE(c->vsock);
}

// What Firecracker's clients send: null for "none" in optional fields.
TEST(VmConfigJsonTest, NullIsNone) {
  auto c = ParseVmConfig(R"({
    "boot-source": {"kernel_image_path": "/k", "initrd_path": null, "boot_args": null},
    "machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": null,
                       "huge_pages": null, "smt": null},
    "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
                "partuuid": null, "is_read_only": null, "cache_type": null, "io_engine": null,
                "rate_limiter": null, "socket": null}],
    "balloon": null, "vsock": null, "entropy": null, "logger": null, "metrics": null,
    "mmds-config": null, "cpu-config": null, "pmem": null, "memory-hotplug": null
  })");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->boot_source->initrd_path, "");
  EXPECT_FALSE(c->boot_source->boot_args);
  EXPECT_EQ(c->drives[0].partuuid, "");
  EXPECT_FALSE(c->drives[0].rate_limiter);
  // An interface as Firecracker's GET /vm/config shows it reads back the same.
  auto round_trips = [](const std::string& iface) {
    auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "network-interfaces": [)" + iface +
                           "]}");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_NE(VmConfigToJson(*c).find(iface), std::string::npos) << VmConfigToJson(*c);
  };
  round_trips(R"({"iface_id":"eth0","host_dev_name":"tap0","guest_mac":null,"mtu":null,)"
              R"("rx_rate_limiter":null,"tx_rate_limiter":null})");
  // A limiter: nulls for what is not there.
  round_trips(R"({"iface_id":"eth0","host_dev_name":"tap0","guest_mac":null,"mtu":null,)"
              R"("rx_rate_limiter":{"bandwidth":null,"ops":{"size":5,"one_time_burst":null,)"
              R"("refill_time":100}},"tx_rate_limiter":null})");
  // mtu: offered to the guest, within Firecracker's range.
  round_trips(R"({"iface_id":"eth0","host_dev_name":"tap0","guest_mac":null,"mtu":9000,)"
              R"("rx_rate_limiter":null,"tx_rate_limiter":null})");
  c = ParseVmConfig(std::string("{") + kBoot + R"(, "network-interfaces": [)" +
                    R"({"iface_id": "e", "host_dev_name": "t", "mtu": 9000}]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->net[0].mtu, 9000);
  ExpectRefused(std::string("{") + kBoot + R"(, "network-interfaces": [)" +
                    R"({"iface_id": "e", "host_dev_name": "t", "mtu": 67}]})",
                "network-interfaces[].mtu must be between 68 and 65535, got 67");
  ExpectRefused(std::string("{") + kBoot + R"(, "network-interfaces": [)" +
                    R"({"iface_id": "e", "host_dev_name": "t", "mtu": 65536}]})",
                "mtu must be between 68 and 65535");
  ExpectRefused(std::string("{") + kBoot +
                    R"(, "balloon": {"amount_mib": 0, "deflate_on_oom": false,
                                     "free_page_reporting": 1}})",
                "free_page_reporting");
}

TEST(VmConfigJsonTest, LoggerLevelsAreReadInAnyCase) {
  for (auto [given, read] : std::vector<std::pair<std::string, std::string>>{
           {"debug", "Debug"}, {"WARN", "Warning"}, {"warning", "Warning"}, {"iNfO", "Info"},
           {"trace", "Trace"}, {"OFF", "Off"}, {"Error", "Error"}}) {
    auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "logger": {"level": ")" + given +
                           R"("}})");
    ASSERT_TRUE(c.ok()) << given << ": " << c.status();
    EXPECT_EQ(c->logger->level, read);
  }
  ExpectRefused(std::string("{") + kBoot + R"(, "logger": {"level": "Warnings"}})",
                "logger.level 'Warnings' must be");
}

// A config file's files are opened as it is read, as Firecracker does; the
// messages are Firecracker's, with the field and path.
TEST(VmConfigJsonTest, TheConfigFilesFilesMustOpen) {
  char dir[] = "/tmp/ember-config-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string kernel = std::string(dir) + "/vmlinux", file = std::string(dir) + "/vm.json";
  fclose(fopen(kernel.c_str(), "w"));
  auto load = [&](const std::string& text) {
    FILE* f = fopen(file.c_str(), "w");
    fputs(text.c_str(), f);
    fclose(f);
    return LoadVmConfigFile(file);
  };
  const std::string boot = R"({"boot-source": {"kernel_image_path": ")" + kernel + R"("})";
  EXPECT_TRUE(load(boot + "}").ok());
  auto c = load(R"({"boot-source": {"kernel_image_path": "/nonexistent/k"}})");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            file + ": Boot source error: The kernel file cannot be opened: No such file or "
                   "directory (os error 2) (boot-source.kernel_image_path '/nonexistent/k')");
  c = load(boot + R"(, "drives": [{"drive_id": "root", "path_on_host": "/nonexistent/r",
                                    "is_root_device": true}]})");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(
                "Error manipulating the backing file: No such file or directory (os error 2) "
                "/nonexistent/r (drives[root].path_on_host)"),
            std::string::npos)
      << c.status();
  c = load(boot + R"(, "network-interfaces": [
      {"iface_id": "a", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"},
      {"iface_id": "b", "host_dev_name": "tap1", "guest_mac": "06:00:00:00:00:01"}]})");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(
                "Network config error: The MAC address is already in use: 06:00:00:00:00:01"),
            std::string::npos)
      << c.status();
  // Firecracker reads the file as a Rust String: it must be UTF-8.
  c = load(boot.substr(0, boot.size() - 1) + ", \"boot_args\": \"quiet \xe9\"}}");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(file + ": boot-source.boot_args is not valid UTF-8"),
            std::string::npos)
      << c.status();
  unlink(file.c_str());
  unlink(kernel.c_str());
  rmdir(dir);
}

TEST(VmConfigJsonTest, MissingFileNamesThePath) {
  auto c = LoadVmConfigFile("/nonexistent/ember.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/ember.json"), std::string::npos);
}

}  // namespace
}  // namespace ember::api
