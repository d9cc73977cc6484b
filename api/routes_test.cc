// Every route of the table, sent a valid body through the router: the
// action the VMM is asked to run must be the right one, with the fields
// the body gave.
#include "api/routes.h"

#include <gtest/gtest.h>

#include "src/common/payload_too_large.h"

#include <functional>
#include <optional>
#include <regex>
#include <tuple>

#include "api/router.h"

namespace ember::api {
namespace {

using Check = std::function<void(const VmmAction&)>;

// Checks that the action is a T, then what `check` says of it.
template <typename T>
Check Holds(std::function<void(const T&)> check = [](const T&) {}) {
  return [check](const VmmAction& action) {
    const T* a = std::get_if<T>(&action);
    ASSERT_NE(a, nullptr) << "the action is alternative " << action.index() << " of VmmAction";
    check(*a);
  };
}

struct Case {
  const char* method;
  const char* pattern;  // as the table has it
  const char* id;       // put in the pattern's {name}
  const char* body;
  Check check;  // empty: answered by the API thread, the VMM is not asked
};

std::vector<Case> Cases() {
  return {
      {"GET", "/", "", "", Holds<GetInstanceInfo>()},
      {"GET", "/version", "", "", nullptr},
      {"PATCH", "/vm", "", R"({"state": "Paused"})",
       Holds<PatchVmState>([](const auto& a) { EXPECT_TRUE(a.paused); })},
      {"PATCH", "/vm", "", R"({"state": "Resumed"})",
       Holds<PatchVmState>([](const auto& a) { EXPECT_FALSE(a.paused); })},
      {"GET", "/vm/config", "", "", Holds<GetVmConfig>()},
      {"GET", "/machine-config", "", "", Holds<GetMachineConfig>()},
      {"PUT", "/machine-config", "",
       R"({"vcpu_count": 2, "mem_size_mib": 256, "track_dirty_pages": true})",
       Holds<PutMachineConfig>([](const auto& a) {
         EXPECT_EQ(a.config.vcpu_count, 2u);
         EXPECT_EQ(a.config.mem_size_mib, 256u);
         EXPECT_TRUE(a.config.track_dirty_pages);
         EXPECT_FALSE(a.sets_cpu_template) << "no cpu_template field";
       })},
      {"PUT", "/machine-config", "",
       R"({"vcpu_count": 2, "mem_size_mib": 256, "cpu_template": "None", "smt": true})",
       Holds<PutMachineConfig>([](const auto& a) {
         EXPECT_TRUE(a.sets_cpu_template);
         EXPECT_EQ(a.config.cpu_template, StaticCpuTemplate::kNone);
         EXPECT_TRUE(a.config.smt);
       })},
      {"PATCH", "/machine-config", "", R"({"mem_size_mib": 512})",
       Holds<PatchMachineConfig>([](const auto& a) {
         EXPECT_EQ(a.mem_size_mib, 512u);
         EXPECT_FALSE(a.vcpu_count);
         EXPECT_FALSE(a.track_dirty_pages);
       })},
      // Firecracker's other fields, with the values that change nothing here.
      {"PATCH", "/machine-config", "", R"({"smt": true, "cpu_template": "None"})",
       Holds<PatchMachineConfig>([](const auto& a) {
         EXPECT_FALSE(a.mem_size_mib || a.vcpu_count || a.track_dirty_pages || a.huge_pages);
         EXPECT_EQ(a.smt, true);
         EXPECT_EQ(a.cpu_template, StaticCpuTemplate::kNone);
       })},
      {"PATCH", "/machine-config", "", R"({"huge_pages": "Transparent"})",
       Holds<PatchMachineConfig>([](const auto& a) {
         EXPECT_EQ(a.huge_pages, HugePages::kTransparent);
         EXPECT_FALSE(a.mem_size_mib);
       })},
      {"PUT", "/boot-source", "",
       R"({"kernel_image_path": "/k", "initrd_path": "/i", "boot_args": "console=ttyS0"})",
       Holds<PutBootSource>([](const auto& a) {
         EXPECT_EQ(a.config.kernel_image_path, "/k");
         EXPECT_EQ(a.config.initrd_path, "/i");
         EXPECT_EQ(a.config.boot_args, "console=ttyS0");
       })},
      {"PUT", "/drives/{drive_id}", "rootfs",
       R"({"drive_id": "rootfs", "path_on_host": "/images/rootfs.ext4",
           "is_root_device": true, "is_read_only": true, "partuuid": "abcd-01",
           "cache_type": "Writeback", "io_engine": "Async"})",
       Holds<PutDrive>([](const auto& a) {
         EXPECT_EQ(a.config.drive_id, "rootfs");
         EXPECT_EQ(a.config.path_on_host, "/images/rootfs.ext4");
         EXPECT_TRUE(a.config.is_root_device);
         EXPECT_TRUE(a.config.is_read_only);
         EXPECT_EQ(a.config.partuuid, "abcd-01");
         EXPECT_EQ(a.config.cache_type, CacheType::kWriteback);
         EXPECT_EQ(a.config.io_engine, IoEngine::kAsync);
       })},
      {"PATCH", "/drives/{drive_id}", "data",
       R"({"drive_id": "data", "path_on_host": "/images/new.img"})",
       Holds<PatchDrive>([](const auto& a) {
         EXPECT_EQ(a.drive_id, "data");
         EXPECT_EQ(a.path_on_host, "/images/new.img");
         EXPECT_FALSE(a.rate_limiter);
       })},
      {"PATCH", "/drives/{drive_id}", "data",
       R"({"drive_id": "data", "rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0},
           "ops": {"size": 100, "refill_time": 1000, "one_time_burst": 50}}})",
       Holds<PatchDrive>([](const auto& a) {
         EXPECT_FALSE(a.path_on_host);
         ASSERT_TRUE(a.rate_limiter);
         ASSERT_TRUE(a.rate_limiter->bandwidth) << "given";
         EXPECT_FALSE(*a.rate_limiter->bandwidth) << "as 0/0: removed";
         ASSERT_TRUE(a.rate_limiter->ops);
         EXPECT_EQ(**a.rate_limiter->ops, (TokenBucketConfig{100, 1000, 50}));
       })},
      {"PUT", "/network-interfaces/{iface_id}", "eth0",
       R"({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "AA:FC:00:00:00:01"})",
       Holds<PutNetworkInterface>([](const auto& a) {
         EXPECT_EQ(a.config.iface_id, "eth0");
         EXPECT_EQ(a.config.host_dev_name, "tap0");
         std::array<uint8_t, 6> mac = {0xaa, 0xfc, 0, 0, 0, 1};
         EXPECT_EQ(a.config.guest_mac, mac);
       })},
      {"PATCH", "/network-interfaces/{iface_id}", "eth1", R"({"iface_id": "eth1"})",
       Holds<PatchNetworkInterface>([](const auto& a) {
         EXPECT_EQ(a.iface_id, "eth1");
         EXPECT_FALSE(a.rx_rate_limiter);
         EXPECT_FALSE(a.tx_rate_limiter);
       })},
      // Firecracker's body: a limiter or bucket not given stays, 0/0 removes.
      {"PATCH", "/network-interfaces/{iface_id}", "eth1",
       R"({"iface_id": "eth1", "rx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0},
           "ops": {"size": 100, "refill_time": 1000, "one_time_burst": 50}},
           "tx_rate_limiter": null})",
       Holds<PatchNetworkInterface>([](const auto& a) {
         ASSERT_TRUE(a.rx_rate_limiter);
         ASSERT_TRUE(a.rx_rate_limiter->bandwidth) << "given";
         EXPECT_FALSE(*a.rx_rate_limiter->bandwidth) << "as 0/0: removed";
         ASSERT_TRUE(a.rx_rate_limiter->ops);
         EXPECT_EQ(**a.rx_rate_limiter->ops, (TokenBucketConfig{100, 1000, 50}));
         EXPECT_FALSE(a.tx_rate_limiter) << "null: unchanged";
       })},
      {"GET", "/balloon", "", "", Holds<GetBalloon>()},
      {"PUT", "/balloon", "",
       R"({"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 5})",
       Holds<PutBalloon>([](const auto& a) {
         EXPECT_EQ(a.config.amount_mib, 64u);
         EXPECT_TRUE(a.config.deflate_on_oom);
         EXPECT_EQ(a.config.stats_polling_interval_s, 5u);
       })},
      {"PATCH", "/balloon", "", R"({"amount_mib": 32})",
       Holds<PatchBalloon>([](const auto& a) { EXPECT_EQ(a.amount_mib, 32u); })},
      {"GET", "/balloon/statistics", "", "", Holds<GetBalloonStats>()},
      {"PATCH", "/balloon/hinting/start", "", R"({"acknowledge_on_stop": false})",
       Holds<StartBalloonHinting>([](const auto& a) { EXPECT_FALSE(a.acknowledge_on_stop); })},
      {"PATCH", "/balloon/hinting/stop", "", "", Holds<StopBalloonHinting>()},
      {"GET", "/balloon/hinting/status", "", "", Holds<GetBalloonHintingStatus>()},
      {"PATCH", "/balloon/statistics", "", R"({"stats_polling_interval_s": 10})",
       Holds<PatchBalloonStats>(
           [](const auto& a) { EXPECT_EQ(a.stats_polling_interval_s, 10u); })},
      {"PUT", "/serial", "", R"({"serial_out_path": "/tmp/console"})",
       Holds<PutSerial>(
           [](const auto& a) { EXPECT_EQ(a.config.serial_out_path, "/tmp/console"); })},
      {"PUT", "/pmem/{id}", "p0",
       R"({"id": "p0", "path_on_host": "/p", "root_device": true, "read_only": true})",
       Holds<PutPmem>([](const auto& a) {
         EXPECT_EQ(a.config.id, "p0");
         EXPECT_TRUE(a.config.root_device && a.config.read_only);
       })},
      {"PATCH", "/pmem/{id}", "p0", R"({"id": "p0"})",
       Holds<PatchPmem>([](const auto& a) { EXPECT_FALSE(a.rate_limiter) << "a no-op"; })},
      {"PATCH", "/pmem/{id}", "p0",
       R"({"id": "p0", "rate_limiter": {"ops": {"size": 1, "refill_time": 100}}})",
       Holds<PatchPmem>([](const auto& a) {
         EXPECT_EQ(a.id, "p0");
         ASSERT_TRUE(a.rate_limiter && a.rate_limiter->ops && *a.rate_limiter->ops);
         EXPECT_EQ((*a.rate_limiter->ops)->size, 1u);
       })},
      {"PUT", "/hotplug/memory", "", R"({"total_size_mib": 512, "block_size_mib": 4})",
       Holds<PutMemoryHotplug>([](const auto& a) {
         EXPECT_EQ(a.config, (MemoryHotplugConfig{512, 128, 4}));
       })},
      {"PATCH", "/hotplug/memory", "", R"({"requested_size_mib": 256})",
       Holds<PatchMemoryHotplug>([](const auto& a) { EXPECT_EQ(a.requested_size_mib, 256u); })},
      {"GET", "/hotplug/memory", "", "", Holds<GetMemoryHotplug>()},
      {"PUT", "/logger", "",
       R"({"log_path": "/tmp/log", "level": "Debug", "show_level": true,
           "show_log_origin": false})",
       Holds<PutLogger>([](const auto& a) {
         EXPECT_EQ(a.config.log_path, "/tmp/log");
         EXPECT_EQ(a.config.level, "Debug");
         EXPECT_EQ(a.config.show_level, true);
         EXPECT_EQ(a.config.show_log_origin, false);
         EXPECT_EQ(a.config.module, std::nullopt);
       })},
      // Absent: as before (Firecracker's rule).
      {"PUT", "/logger", "", R"({"level": "Info"})",
       Holds<PutLogger>([](const auto& a) {
         EXPECT_EQ(a.config.show_level, std::nullopt);
         EXPECT_EQ(a.config.show_log_origin, std::nullopt);
       })},
      {"PUT", "/metrics", "", R"({"metrics_path": "/tmp/metrics"})",
       Holds<PutMetrics>(
           [](const auto& a) { EXPECT_EQ(a.config.metrics_path, "/tmp/metrics"); })},
      {"PUT", "/actions", "", R"({"action_type": "InstanceStart"})", Holds<InstanceStart>()},
      {"PUT", "/actions", "", R"({"action_type": "FlushMetrics"})", Holds<FlushMetrics>()},
      {"PUT", "/actions", "", R"({"action_type": "SendCtrlAltDel"})", Holds<SendCtrlAltDel>()},
      {"PUT", "/snapshot/create", "",
       R"({"snapshot_path": "/s/vm.snap", "mem_file_path": "/s/vm.mem",
           "snapshot_type": "Diff"})",
       Holds<CreateSnapshot>([](const auto& a) {
         EXPECT_EQ(a.snapshot_path, "/s/vm.snap");
         EXPECT_EQ(a.mem_file_path, "/s/vm.mem");
         EXPECT_TRUE(a.diff);
       })},
      {"PUT", "/snapshot/create", "", R"({"snapshot_path": "/s", "mem_file_path": "/m"})",
       Holds<CreateSnapshot>([](const auto& a) { EXPECT_FALSE(a.diff); })},
      {"PUT", "/snapshot/load", "",
       R"({"snapshot_path": "/s/vm.snap", "resume_vm": true, "track_dirty_pages": true,
           "mem_backend": {"backend_type": "Uffd", "backend_path": "/run/uffd.sock"},
           "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap7"}],
           "vsock_override": {"uds_path": "/run/clone.sock"}, "clock_realtime": true})",
       Holds<LoadSnapshot>([](const auto& a) {
         EXPECT_EQ(a.snapshot_path, "/s/vm.snap");
         EXPECT_TRUE(a.clock_realtime);
         EXPECT_FALSE(a.huge_pages) << "absent: the snapshot's own";
         EXPECT_EQ(a.mem_backend_path, "/run/uffd.sock");
         EXPECT_TRUE(a.uffd);
         EXPECT_TRUE(a.resume_vm);
         EXPECT_TRUE(a.track_dirty_pages);
         using Override = std::pair<std::string, std::string>;
         EXPECT_EQ(a.network_overrides, std::vector<Override>({{"eth0", "tap7"}}));
         EXPECT_EQ(a.vsock_uds_path, "/run/clone.sock");
         EXPECT_FALSE(a.working_set_path);
       })},
      {"PUT", "/entropy", "", "{}", Holds<PutEntropy>()},
      {"PUT", "/cpu-config", "",
       R"({"kvm_capabilities": ["!56"], "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0",
           "flags": 0, "modifiers": [{"register": "ecx", "bitmap": "0bx0"}]}]})",
       Holds<PutCpuConfig>([](const auto& a) {
         ASSERT_EQ(a.config.cpuid_modifiers.size(), 1u);
         EXPECT_EQ(a.config.cpuid_modifiers[0].registers[0].bits.filter, 0b01u) << "bit 0 cleared, bit 1 kept";
         EXPECT_EQ(a.config.kvm_capabilities[0], (KvmCapabilityModifier{56, true}));
       })},
      {"PUT", "/entropy", "", R"({"rate_limiter": {}})",
       Holds<PutEntropy>([](const auto& a) { EXPECT_FALSE(a.config.rate_limiter); })},
      {"PUT", "/entropy", "", R"({"rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}})",
       Holds<PutEntropy>([](const auto& a) {
         ASSERT_TRUE(a.config.rate_limiter);
         EXPECT_EQ(a.config.rate_limiter->bandwidth, (TokenBucketConfig{1000, 100, 0}));
         EXPECT_FALSE(a.config.rate_limiter->ops);
       })},
      {"PUT", "/vsock", "", R"({"guest_cid": 3, "uds_path": "/run/v.sock"})",
       Holds<PutVsock>([](const auto& a) {
         EXPECT_EQ(a.config.guest_cid, 3u);
         EXPECT_EQ(a.config.uds_path, "/run/v.sock");
       })},
      {"GET", "/mmds", "", "", Holds<GetMmds>()},
      // Any JSON text goes to the store as it came; the store parses it.
      {"PUT", "/mmds", "", R"({"latest": {"meta-data": {"ami-id": "ami-1"}}})",
       Holds<PutMmds>([](const auto& a) {
         EXPECT_EQ(a.json, R"({"latest": {"meta-data": {"ami-id": "ami-1"}}})");
       })},
      {"PUT", "/mmds", "", "[1, 2]", Holds<PutMmds>()},
      {"PATCH", "/mmds", "", R"({"a": null})",
       Holds<PatchMmds>([](const auto& a) { EXPECT_EQ(a.json, R"({"a": null})"); })},
      {"PUT", "/mmds/config", "", R"({"network_interfaces": ["eth0"]})",
       Holds<PutMmdsConfig>([](const auto& a) {
         EXPECT_EQ(a.config.network_interfaces, std::vector<std::string>{"eth0"});
         EXPECT_EQ(a.config.version, MmdsConfig::Version::kV1);
         EXPECT_EQ(a.config.ipv4_address, 0xa9fea9feu);
         EXPECT_FALSE(a.config.imds_compat);
       })},
      {"PUT", "/mmds/config", "",
       R"({"network_interfaces": ["a", "b"], "version": "V2", "ipv4_address": "169.254.1.2",
           "imds_compat": true})",
       Holds<PutMmdsConfig>([](const auto& a) {
         EXPECT_EQ(a.config.network_interfaces, (std::vector<std::string>{"a", "b"}));
         EXPECT_EQ(a.config.version, MmdsConfig::Version::kV2);
         EXPECT_EQ(a.config.ipv4_address, 0xa9fe0102u);
         EXPECT_TRUE(a.config.imds_compat);
       })},
      {"PUT", "/snapshot/load", "",
       R"({"snapshot_path": "/s", "mem_file_path": "/s/vm.mem", "working_set_path": "/s/vm.ws"})",
       Holds<LoadSnapshot>([](const auto& a) { EXPECT_EQ(a.working_set_path, "/s/vm.ws"); })},
      {"PUT", "/snapshot/load", "",
       R"({"snapshot_path": "/s", "mem_file_path": "/m", "huge_pages": "Snapshot"})",
       Holds<LoadSnapshot>([](const auto& a) { EXPECT_FALSE(a.huge_pages); })},
      {"PUT", "/snapshot/load", "",
       R"({"snapshot_path": "/s", "mem_file_path": "/m", "huge_pages": "None"})",
       Holds<LoadSnapshot>([](const auto& a) { EXPECT_EQ(a.huge_pages, HugePages::kNone); })},
      {"PUT", "/snapshot/working-set", "",
       R"({"snapshot_path": "/s/vm.snap", "working_set_path": "/s/vm.ws"})",
       Holds<RecordWorkingSet>([](const auto& a) {
         EXPECT_EQ(a.snapshot_path, "/s/vm.snap");
         EXPECT_EQ(a.working_set_path, "/s/vm.ws");
       })},
      {"PUT", "/snapshot/load", "", R"({"snapshot_path": "/s", "mem_file_path": "/s/vm.mem"})",
       Holds<LoadSnapshot>([](const auto& a) {
         EXPECT_EQ(a.mem_backend_path, "/s/vm.mem");
         EXPECT_FALSE(a.uffd);
         EXPECT_FALSE(a.resume_vm);
         EXPECT_FALSE(a.track_dirty_pages);
       })},
  };
}

TEST(RoutesTest, EveryRouteBuildsItsActionFromAValidBody) {
  std::map<std::string, std::set<std::string>> tried;
  for (const Case& c : Cases()) {
    std::string path = std::regex_replace(c.pattern, std::regex("\\{[a-z_]+\\}"), c.id);
    SCOPED_TRACE(std::string(c.method) + " " + path + " " + c.body);
    tried[c.pattern].insert(c.method);
    std::vector<VmmAction> asked;
    ActionRunner capture = [&](VmmAction a) -> absl::StatusOr<VmmResult> {
      asked.push_back(std::move(a));
      return std::monostate();
    };
    HttpResponse r = Route({c.method, path, c.body}, capture);
    if (!c.check) {
      EXPECT_EQ(r.status, 200) << r.body;
      EXPECT_TRUE(asked.empty()) << "answered without the VMM";
      continue;
    }
    EXPECT_EQ(r.status, 204) << r.body;
    ASSERT_EQ(asked.size(), 1u);
    c.check(asked[0]);
  }
  EXPECT_EQ(tried, ServedRoutes()) << "every served route and method has a case here";
}

TEST(RoutesTest, BadHugePagesAreRefusedByName) {
  const std::tuple<const char*, const char*, const char*> cases[] = {
      {"PATCH", "/machine-config", R"({"huge_pages": "4K"})"},
      {"PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 2, "huge_pages": "2m"})"},
      {"PUT", "/snapshot/load",
       R"({"snapshot_path": "/s", "mem_file_path": "/m", "huge_pages": "1G"})"},
  };
  for (const auto& [method, path, body] : cases) {
    int calls = 0;
    HttpResponse r = Route({method, path, body}, [&](VmmAction) -> absl::StatusOr<VmmResult> {
      calls++;
      return std::monostate();
    });
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_NE(r.body.find(R"(huge_pages)"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find(R"(\"Transparent\" or \"2M\")"), std::string::npos) << r.body;
    EXPECT_EQ(calls, 0) << body;
  }
}

TEST(RoutesTest, BadNetworkLimiterPatchesAreRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"iface_id": "eth0", "tx_rate_limiter": {"ops": {"size": -5, "refill_time": 10}}})",
       "network-interfaces[eth0].tx_rate_limiter.ops.size"},
      {R"({"iface_id": "eth0", "rx_rate_limiter": {"bandwith": {}}})",
       "network-interfaces[eth0].rx_rate_limiter: unknown field 'bandwith'"},
      {R"({"iface_id": "eth0", "rate_limiter": {}})", "unknown field 'rate_limiter'"},
  };
  for (const auto& [body, message] : cases) {
    int calls = 0;
    HttpResponse r = Route({"PATCH", "/network-interfaces/eth0", body},
                           [&](VmmAction) -> absl::StatusOr<VmmResult> {
                             calls++;
                             return std::monostate();
                           });
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_NE(r.body.find(message), std::string::npos) << r.body << " lacks " << message;
    EXPECT_EQ(calls, 0) << body;
  }
}

TEST(RoutesTest, BalloonStatisticsTakeAnyU16Interval) {
  ActionRunner ok = [](VmmAction) -> absl::StatusOr<VmmResult> { return std::monostate(); };
  // Firecracker's field is a u16: 65535 s is taken, one more refused.
  EXPECT_EQ(Route({"PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 65535})"}, ok)
                .status,
            204);
  EXPECT_EQ(Route({"PUT", "/balloon",
                   R"({"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 65535})"},
                  ok)
                .status,
            204);
  HttpResponse r =
      Route({"PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 65536})"}, ok);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("stats_polling_interval_s"), std::string::npos) << r.body;
}

TEST(RoutesTest, BadMmdsConfigIsRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"network_interfaces": ["eth0"], "version": "V3"})",
       "mmds-config.version 'V3' must be"},
      {R"({"version": "V2"})", "mmds-config.network_interfaces"},
      {R"({"network_interfaces": "eth0"})", "mmds-config.network_interfaces must be an array"},
      {R"({"network_interfaces": [1]})", "mmds-config.network_interfaces[] must be strings"},
      {R"({"network_interfaces": ["eth0"], "ipv4_address": "169.254.1"})",
       "mmds-config.ipv4_address '169.254.1'"},
      {R"({"network_interfaces": ["eth0"], "ipv4": "169.254.1.1"})", "unknown field 'ipv4'"},
      {R"({"network_interfaces": ["eth0"])", "malformed JSON"},
  };
  for (const auto& [body, message] : cases) {
    int calls = 0;
    HttpResponse r = Route({"PUT", "/mmds/config", body}, [&](VmmAction) -> absl::StatusOr<VmmResult> {
      calls++;
      return std::monostate();
    });
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_NE(r.body.find(message), std::string::npos) << r.body << " lacks " << message;
    EXPECT_EQ(calls, 0) << body;
  }
}

TEST(RoutesTest, MmdsV1IsDeprecatedAndAFullStoreIs413) {
  ActionRunner ok = [](VmmAction) -> absl::StatusOr<VmmResult> { return std::monostate(); };
  EXPECT_TRUE(Route({"PUT", "/mmds/config", R"({"network_interfaces": ["e"]})"}, ok).deprecated);
  EXPECT_TRUE(
      Route({"PUT", "/mmds/config", R"({"network_interfaces": ["e"], "version": "V1"})"}, ok)
          .deprecated);
  EXPECT_FALSE(
      Route({"PUT", "/mmds/config", R"({"network_interfaces": ["e"], "version": "V2"})"}, ok)
          .deprecated);
  ActionRunner full = [](VmmAction) -> absl::StatusOr<VmmResult> {
    return PayloadTooLargeError("The MMDS patch request doesn't fit.");
  };
  HttpResponse r = Route({"PUT", "/mmds", R"({"a": "b"})"}, full);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body,
            R"({"fault_message":"MMDS limit exceeded error: The MMDS patch request doesn't fit."})");
  // Out of memory elsewhere (an mmap's ENOMEM) is a 400 like any other.
  ActionRunner no_memory = [](VmmAction) -> absl::StatusOr<VmmResult> {
    return absl::ResourceExhaustedError("mmap of guest memory: Cannot allocate memory");
  };
  r = Route({"PUT", "/actions", R"({"action_type": "InstanceStart"})"}, no_memory);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, R"({"fault_message":"mmap of guest memory: Cannot allocate memory"})");
  ActionRunner doc = [](VmmAction) -> absl::StatusOr<VmmResult> {
    return MmdsDocument{R"({"a":"b"})"};
  };
  r = Route({"GET", "/mmds", ""}, doc);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"a":"b"})");
}

TEST(RoutesTest, PatternsAndMethodsAreWellFormed) {
  std::set<std::pair<std::string, std::string>> seen;
  for (const RouteSpec& route : RouteTable()) {
    std::string pattern = route.pattern, method = route.method;
    EXPECT_EQ(pattern[0], '/') << pattern;
    EXPECT_TRUE(method == "GET" || method == "PUT" || method == "PATCH") << method;
    EXPECT_TRUE(seen.insert({pattern, method}).second) << method << " " << pattern << " twice";
    int ways = (route.parse != nullptr) + (route.answer != nullptr) + (route.parse_text != nullptr);
    EXPECT_EQ(ways, 1) << method << " " << pattern << ": one parser or an answer";
  }
}

}  // namespace
}  // namespace ember::api
