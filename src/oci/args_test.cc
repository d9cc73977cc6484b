#include "src/oci/args.h"

#include <gtest/gtest.h>

namespace ember::oci {
namespace {

CommandLine Parse(const std::vector<std::string>& argv) {
  CommandLine cl;
  UsageError error;
  EXPECT_TRUE(ParseCommandLine(argv, &cl, &error)) << error.message;
  return cl;
}

UsageError Fails(const std::vector<std::string>& argv) {
  CommandLine cl;
  UsageError error;
  EXPECT_FALSE(ParseCommandLine(argv, &cl, &error));
  return error;
}

TEST(ArgsTest, TheShimsCreate) {
  // As go-runc writes it for containerd-shim-runc-v2.
  CommandLine cl = Parse({"--root", "/run/x", "--log", "/b/log.json", "--log-format", "json",
                          "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file",
                          "/b/init.pid", "--console-socket", "/tmp/pty.sock", "--no-pivot", "c1"});
  EXPECT_EQ(cl.root, "/run/x");
  EXPECT_EQ(cl.log, "/b/log.json");
  EXPECT_TRUE(cl.log_json);
  EXPECT_EQ(cl.command, "create");
  EXPECT_EQ(cl.Value("bundle"), "/b");
  EXPECT_EQ(cl.Value("pid-file"), "/b/init.pid");
  EXPECT_EQ(cl.Value("console-socket"), "/tmp/pty.sock");
  EXPECT_TRUE(cl.Has("no-pivot"));
  EXPECT_EQ(cl.args, std::vector<std::string>{"c1"});
}

TEST(ArgsTest, EqualsFormsAliasesAndOptionsAfterArguments) {
  CommandLine cl = Parse({"--root=/r", "--rootless=false", "kill", "c1", "9", "--all"});
  EXPECT_EQ(cl.root, "/r");
  EXPECT_TRUE(cl.Has("all"));
  EXPECT_EQ(cl.args, (std::vector<std::string>{"c1", "9"}));
  cl = Parse({"exec", "-p", "/p.json", "-d", "--pid-file=/x.pid", "-t", "c1"});
  EXPECT_EQ(cl.Value("process"), "/p.json");
  EXPECT_TRUE(cl.Has("detach"));
  EXPECT_TRUE(cl.Has("tty"));
  EXPECT_EQ(cl.Value("pid-file"), "/x.pid");
  cl = Parse({"delete", "-f", "c1"});
  EXPECT_TRUE(cl.Has("force"));
  cl = Parse({"ps", "--format", "json", "c1"});
  EXPECT_EQ(cl.Value("format"), "json");
}

TEST(ArgsTest, VersionHelpAndNoCommand) {
  EXPECT_TRUE(Parse({"--version"}).version);
  EXPECT_TRUE(Parse({"-v"}).version);
  EXPECT_TRUE(Parse({"--help"}).help);
  EXPECT_TRUE(Parse({}).help);
}

TEST(ArgsTest, BadLinesAsRuncAnswersThem) {
  UsageError e = Fails({"frobnicate", "c1"});
  EXPECT_EQ(e.exit_code, kExitUnknownCommand);
  EXPECT_EQ(e.message, "No help topic for 'frobnicate'");
  e = Fails({"--bogus", "state", "c1"});
  EXPECT_EQ(e.exit_code, kExitError);
  EXPECT_EQ(e.message, "flag provided but not defined: -bogus");
  e = Fails({"state", "--bogus", "c1"});
  EXPECT_EQ(e.message, "flag provided but not defined: -bogus");
  e = Fails({"start"});
  EXPECT_EQ(e.exit_code, kExitError);
  EXPECT_EQ(e.message, "container id cannot be empty");
  e = Fails({"create", "--bundle"});
  EXPECT_EQ(e.message, "flag needs an argument: -bundle");
  e = Fails({"--log-format", "xml", "state", "c1"});
  EXPECT_EQ(e.message, "invalid log-format: xml");
  e = Fails({"state", "a", "b"});
  EXPECT_EQ(e.exit_code, kExitError);
  // Options of another command are unknown to this one.
  EXPECT_EQ(Fails({"start", "--force", "c1"}).message, "flag provided but not defined: -force");
}

}  // namespace
}  // namespace ember::oci
