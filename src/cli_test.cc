#include "src/cli.h"

#include <gtest/gtest.h>

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
}

TEST(CliTest, RefusesWithAMessage) {
  auto unknown = ParseCli({"--frobnicate"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "unknown argument '--frobnicate'");
  EXPECT_FALSE(ParseCli({"--config-file"}).ok()) << "missing value";
  EXPECT_FALSE(ParseCli({"--no-api=yes"}).ok()) << "flag with a value";
  EXPECT_FALSE(ParseCli({"--no-api"}).ok()) << "--no-api without a config file";
  EXPECT_FALSE(ParseCli({"--level", "Loud"}).ok());
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
