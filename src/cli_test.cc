#include "src/cli.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "src/common/version.h"

namespace ember {
namespace {

TEST(CliTest, ParsesFirecrackerStyleOptions) {
  auto o = ParseCli({"--no-api", "--config-file", "vm.json", "--id=vm-1", "--level", "Debug"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->no_api);
  EXPECT_EQ(o->config_file, "vm.json");
  EXPECT_EQ(o->id, "vm-1");
  EXPECT_EQ(o->level, "Debug");
  EXPECT_EQ(ParseCli({"--api-sock", "/tmp/s"})->api_sock, "/tmp/s");
  EXPECT_TRUE(ParseCli({"--help"})->help);
  EXPECT_TRUE(ParseCli({"--version"})->version);
  EXPECT_EQ(VersionText("/usr/bin/ember"), absl::StrCat("Ember v", kVersion, "\n"));
  // Under Firecracker's name the first line is Firecracker's: Kata's driver
  // reads its second word as the release (at least 0.21.1).
  EXPECT_EQ(VersionText("/srv/jail/firecracker"),
            absl::StrCat("Firecracker v", kFirecrackerApiVersion, "\n\nEmber v", kVersion, "\n"));
}

TEST(CliTest, RefusesWithAMessage) {
  auto unknown = ParseCli({"--frobnicate"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "unknown argument '--frobnicate'");
  EXPECT_FALSE(ParseCli({"--config-file"}).ok()) << "missing value";
  EXPECT_FALSE(ParseCli({"--no-api=yes"}).ok()) << "flag with a value";
  EXPECT_FALSE(ParseCli({"--no-api"}).ok()) << "--no-api without a config file";
  EXPECT_EQ(ParseCli({"--level", "Loud"}).status().message(),
            "--level 'Loud' must be Error, Warning, Info, Debug, Trace or Off");
  EXPECT_FALSE(ParseCli({"--no-seccomp", "--seccomp-filter", "f"}).ok());
}

// Ember's KSM opt-in: off unless given, a flag without a value, and its
// help names the side channel.
TEST(CliTest, MergeGuestMemoryIsOptIn) {
  EXPECT_FALSE(ParseCli({})->merge_guest_memory);
  auto o = ParseCli({"--merge-guest-memory", "--id", "vm-1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->merge_guest_memory);
  EXPECT_EQ(ParseCli({"--merge-guest-memory=yes"}).status().message(),
            "--merge-guest-memory takes no value");
  EXPECT_NE(std::string(kUsage).find("--merge-guest-memory"), std::string::npos);
  EXPECT_NE(std::string(kUsage).find("side channel"), std::string::npos);
}

// Firecracker's logging and metrics flags, for the controller's logger
// and metrics (as PUT /logger and PUT /metrics).
TEST(CliTest, LoggerAndMetricsFlags) {
  auto o = ParseCli({"--log-path", "/tmp/log.fifo", "--level", "debug", "--show-level",
                     "--show-log-origin", "--metrics-path=/tmp/metrics.fifo"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->log_path, "/tmp/log.fifo");
  EXPECT_EQ(o->level, "Debug");
  EXPECT_TRUE(o->show_level);
  EXPECT_TRUE(o->show_log_origin);
  EXPECT_EQ(o->metrics_path, "/tmp/metrics.fifo");
  o = ParseCli({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->level, "Info");
  EXPECT_TRUE(o->log_path.empty() && o->metrics_path.empty());
  EXPECT_FALSE(o->show_level || o->show_log_origin);
  // Firecracker reads levels in any case, and Warn.
  for (auto [given, level] : {std::pair{"warn", "Warning"}, std::pair{"WARNING", "Warning"},
                              std::pair{"Trace", "Trace"}, std::pair{"off", "Off"},
                              std::pair{"error", "Error"}, std::pair{"INFO", "Info"}}) {
    EXPECT_EQ(ParseCli({"--level", given})->level, level) << given;
  }
  EXPECT_FALSE(ParseCli({"--log-path"}).ok());
  EXPECT_FALSE(ParseCli({"--show-level=true"}).ok());
}

// Kata expects a copy of the VMM installed as firecracker to answer at
// Firecracker's default socket (in its jail, <root>/run/firecracker.socket).
TEST(CliTest, TheDefaultSocketFollowsTheProgramName) {
  EXPECT_EQ(ParseCli({})->api_sock, "/run/ember.socket");
  EXPECT_EQ(ParseCli({}, "/usr/local/bin/ember")->api_sock, "/run/ember.socket");
  EXPECT_EQ(ParseCli({}, "firecracker")->api_sock, "/run/firecracker.socket");
  EXPECT_EQ(ParseCli({}, "/opt/kata/bin/firecracker")->api_sock, "/run/firecracker.socket");
  EXPECT_EQ(ParseCli({}, "./firecracker-v1.7.0-x86_64")->api_sock, "/run/firecracker.socket");
  EXPECT_EQ(ParseCli({}, "/firecracker/ember")->api_sock, "/run/ember.socket");
  EXPECT_EQ(ParseCli({"--api-sock", "/tmp/s"}, "firecracker")->api_sock, "/tmp/s");
}

// What Firecracker's jailer (and ember-jailer) put before the caller's
// arguments, then what Kata adds.
TEST(CliTest, TheJailersArguments) {
  auto o = ParseCli({"--id", "vm-1", "--start-time-us", "123456", "--start-time-cpu-us", "789",
                     "--parent-cpu-time-us", "1011", "--config-file", "/fcConfig.json"},
                    "firecracker");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->start_time_us, 123456u);
  EXPECT_EQ(o->start_time_cpu_us, 789u);
  EXPECT_EQ(o->parent_cpu_time_us, 1011u);
  EXPECT_EQ(o->config_file, "/fcConfig.json");
  EXPECT_EQ(o->api_sock, "/run/firecracker.socket");
  o = ParseCli({});
  EXPECT_FALSE(o->start_time_us || o->start_time_cpu_us || o->parent_cpu_time_us);
  for (const char* bad : {"-1", "soon", "", "18446744073709551616"}) {
    EXPECT_FALSE(ParseCli({"--start-time-us", bad}).ok()) << bad;
  }
  EXPECT_EQ(ParseCli({"--parent-cpu-time-us", "x"}).status().message(),
            "--parent-cpu-time-us 'x' must be a number");
}

TEST(CliTest, FirecrackerFlagsEmberCannotHonourAreRefusedWithTheReason) {
  EXPECT_EQ(ParseCli({"--metadata", "/m.json"})->metadata, "/m.json") << "MMDS's first data";
  // --module is logger.module: a source path, not a Rust module.
  EXPECT_EQ(ParseCli({"--module", "src/devices"})->module, "src/devices");
  EXPECT_NE(ParseCli({"--module", "vmm::devices"}).status().message().find(
                "--module 'vmm::devices': Ember filters by source path"),
            std::string::npos);
  EXPECT_FALSE(ParseCli({"--module", "/abs"}).ok());
  EXPECT_EQ(ParseCli({"--enable-pci"}).status().message(),
            "--enable-pci is not supported: Ember has no PCI; its devices are virtio-mmio");
  // A limit for a store Ember does not have: accepted, bounds nothing.
  EXPECT_EQ(ParseCli({"--mmds-size-limit", "4096"})->mmds_size_limit, 4096u);
  EXPECT_FALSE(ParseCli({"--mmds-size-limit", "big"}).ok());
}

TEST(CliTest, PrintingFlags) {
  // As Firecracker's parser: --help and --version win over anything else.
  EXPECT_TRUE(ParseCli({"--frobnicate", "--version"})->version);
  EXPECT_TRUE(ParseCli({"--no-api", "-h"})->help);
  EXPECT_TRUE(ParseCli({"--snapshot-version"})->snapshot_version);
  EXPECT_EQ(ParseCli({"--describe-snapshot", "vm.state"})->describe_snapshot, "vm.state");
  EXPECT_FALSE(ParseCli({"--no-api", "--snapshot-version"}).ok()) << "as Firecracker's";
  EXPECT_FALSE(ParseCli({"--describe-snapshot"}).ok());
}

TEST(CliTest, InstanceIds) {
  EXPECT_TRUE(ValidInstanceId("a"));
  EXPECT_TRUE(ValidInstanceId(std::string(64, 'a')));
  EXPECT_FALSE(ValidInstanceId(""));
  EXPECT_FALSE(ValidInstanceId(std::string(65, 'a')));
  EXPECT_FALSE(ValidInstanceId("../etc"));
  EXPECT_FALSE(ValidInstanceId("a_b"));
  EXPECT_FALSE(ParseCli({"--id", "a b"}).ok());
}

}  // namespace
}  // namespace ember
