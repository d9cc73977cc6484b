#include "api/vm_config_json.h"

#include <gtest/gtest.h>

#include <string>

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
  ExpectRefused(R"({"boot-source": {"kernel_image_path": ""}})", "must not be empty");
}

TEST(VmConfigJsonTest, EmptyNetworkLimitersAreTakenBucketsAreNot) {
  // Kata sends an empty rx_rate_limiter even with rate limiting off.
  auto c = ParseVmConfig(std::string("{") + kBoot +
                         R"(, "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                              "rx_rate_limiter": {}, "tx_rate_limiter": null}]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->net.size(), 1u);
  ExpectRefused(std::string("{") + kBoot +
                    R"(, "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                        "tx_rate_limiter": {"ops": {"size": 10, "refill_time": 100}}}]})",
                "network-interfaces[eth0]: network rate limiters with buckets are not supported yet");
  ExpectRefused(std::string("{") + kBoot +
                    R"(, "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                        "rx_rate_limiter": {"ops": {"size": -1, "refill_time": 100}}}]})",
                "network-interfaces[eth0].rx_rate_limiter");
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

TEST(VmConfigJsonTest, SectionsForMissingDevicesAreRefused) {
  ExpectRefused(std::string("{") + kBoot + R"(, "mmds-config": {"network_interfaces": ["e"]}})",
                "'mmds-config'");
}

// A drive with `limiter` as its rate_limiter.
std::string DriveWith(const std::string& limiter) {
  return std::string("{") + kBoot +
         R"(, "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
             "rate_limiter": )" + limiter + "}]}";
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
  ExpectRefused(DriveWith(R"({"ops": {"size": 0, "refill_time": 100}})"),
                "drives[d].rate_limiter.ops.size must be positive when refill_time is set");
  ExpectRefused(DriveWith(R"({"ops": {"size": 10, "refill_time": 0}})"),
                "drives[d].rate_limiter.ops.refill_time must be positive when size is set");
  ExpectRefused(DriveWith(R"({"ops": {"size": 10}})"),
                "drives[d].rate_limiter.ops.refill_time is required");
  ExpectRefused(DriveWith(R"({"ops": {"size": 10, "refill_time": 1, "burst": 5}})"),
                "unknown field 'burst'");
  ExpectRefused(DriveWith(R"({"iops": {}})"), "unknown field 'iops'");
  ExpectRefused(DriveWith(R"({"ops": {"size": 10, "refill_time": 18446744073709551615}})"),
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

TEST(VmConfigJsonTest, UnsupportedMachineOptions) {
  ExpectRefused(Config(R"({"vcpu_count": 2, "mem_size_mib": 128, "smt": true})"), "SMT");
  ExpectRefused(Config(R"({"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": "T2"})"),
                "cpu_template 'T2'");
  ExpectRefused(Config(R"({"vcpu_count": 2, "mem_size_mib": 128, "huge_pages": "2M"})"),
                "huge_pages '2M'");
}

TEST(VmConfigJsonTest, SerialSection) {
  auto c = ParseVmConfig(std::string("{") + kBoot + R"(, "serial": {"serial_out_path": "/tmp/c"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->serial.serial_out_path, "/tmp/c");
  ExpectRefused(std::string("{") + kBoot + R"(, "serial": {"serial_out_path": 1}})",
                "serial.serial_out_path must be a string");
  ExpectRefused(std::string("{") + kBoot + R"(, "serial": {"rate_limiter": {"bandwidth": {}}}})",
                "serial.rate_limiter is not supported");
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
                                         "show_level": true, "show_log_origin": true}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->logger);
  EXPECT_EQ(c->logger->log_path, "/tmp/l");
  EXPECT_EQ(c->logger->level, "Debug");
  EXPECT_TRUE(c->logger->show_log_origin);
  ExpectRefused(std::string("{") + kBoot + R"(, "logger": {"level": "Loud"}})",
                "logger.level 'Loud' must be");
  ExpectRefused(std::string("{") + kBoot + R"(, "logger": {"module": "api"}})",
                "logger.module filtering is not supported");
}

TEST(VmConfigJsonTest, WritesWhatItReads) {
  const std::string text =
      R"({"boot-source":{"kernel_image_path":"/k","initrd_path":"/i",)"
      R"("boot_args":"console=ttyS0"},"machine-config":{"vcpu_count":2,"mem_size_mib":256,)"
      R"("smt":false,"track_dirty_pages":true},)"
      R"("drives":[{"drive_id":"rootfs","path_on_host":"/r.ext4","is_root_device":true,)"
      R"("is_read_only":true,"partuuid":"abcd-01","cache_type":"Writeback","io_engine":"Async"},)"
      R"({"drive_id":"data","path_on_host":"/d.img","is_root_device":false,"is_read_only":false,)"
      R"("cache_type":"Unsafe","io_engine":"Sync"}],)"
      R"("network-interfaces":[{"iface_id":"eth0","host_dev_name":"tap0",)"
      R"("guest_mac":"aa:fc:00:00:00:0f"},{"iface_id":"eth1","host_dev_name":"tap1"}],)"
      R"("balloon":{"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5}})";
  auto c = ParseVmConfig(text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(VmConfigToJson(*c), text);
  EXPECT_EQ(MachineConfigToJson(c->machine),
            R"({"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true})");
  EXPECT_EQ(BalloonConfigToJson(*c->balloon),
            R"({"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5})");
}

TEST(VmConfigJsonTest, AnEmptyConfigIsWrittenWithItsDefaults) {
  std::string text = VmConfigToJson(VmConfig());
  EXPECT_EQ(text,
            R"({"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,)"
            R"("track_dirty_pages":false},"drives":[],"network-interfaces":[]})");
  auto c = ParseVmConfig(text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->boot_source);
  EXPECT_FALSE(c->balloon);
}

TEST(VmConfigJsonTest, MissingFileNamesThePath) {
  auto c = LoadVmConfigFile("/nonexistent/ember.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/ember.json"), std::string::npos);
}

}  // namespace
}  // namespace ember::api
