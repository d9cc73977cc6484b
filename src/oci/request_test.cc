#include "src/oci/request.h"

#include <gtest/gtest.h>

#include "src/oci/vm.h"

namespace ember::oci {
namespace {

ProcessSpec Shell() {
  ProcessSpec p;
  p.args = {"sh", "-c", "true"};
  p.env = {"PATH=/bin"};
  return p;
}

TEST(RequestTest, CarriesTheProcess) {
  ProcessSpec p = Shell();
  p.terminal = true;
  p.cwd = "/work";
  p.uid = 1000;
  p.gid = 100;
  p.additional_gids = {10};
  agent::ExecRequest r = ContainerRequest(p, "box");
  EXPECT_EQ(r.flags, agent::ExecRequest::kFlagStdin | agent::ExecRequest::kFlagContainer |
                         agent::ExecRequest::kFlagTty);
  EXPECT_EQ(r.argv, p.args);
  EXPECT_EQ(r.env, p.env);
  EXPECT_EQ(r.cwd, "/work");
  EXPECT_EQ(r.container.uid, 1000u);
  EXPECT_EQ(r.container.groups, std::vector<uint32_t>{10});
  EXPECT_EQ(r.container.root_device, kContainerDevice);
  EXPECT_EQ(r.container.root_dir, kContainerRootDir);
  EXPECT_EQ(r.container.hostname, "box");
  EXPECT_TRUE(CheckRequest(r).ok());
  std::string error;
  agent::ExecRequest back;
  EXPECT_TRUE(agent::DecodeExec(agent::EncodeExec(r), &back, &error)) << error;
}

// Kubernetes gives every container a few variables per service in its
// namespace: a thousand services make an environment of hundreds of KiB,
// which one 64 KiB frame could not carry.
TEST(RequestTest, TakesAnEnvironmentOfHundredsOfKilobytes) {
  ProcessSpec p = Shell();
  for (int i = 0; i < 7000; ++i) {
    p.env.push_back("SERVICE_" + std::to_string(i) + "_PORT_8080_TCP_ADDR=10.96.12.34");
  }
  agent::ExecRequest r = ContainerRequest(p, "");
  std::string payload = agent::EncodeExec(r);
  ASSERT_GT(payload.size(), 300u * 1024);
  EXPECT_TRUE(CheckRequest(r).ok());
  std::string wire;
  agent::AppendFrame(&wire, agent::Type::kExec, payload);
  agent::FrameDecoder decoder;
  decoder.Feed(wire);
  agent::Frame frame;
  std::string error;
  ASSERT_EQ(decoder.Next(&frame, &error), agent::FrameDecoder::Result::kFrame) << error;
  agent::ExecRequest back;
  ASSERT_TRUE(agent::DecodeExec(frame.payload, &back, &error)) << error;
  EXPECT_EQ(back.env, p.env);
}

TEST(RequestTest, RefusesWhatTheAgentCannotTake) {
  ProcessSpec big = Shell();
  big.env.push_back("HUGE=" + std::string(agent::kMaxExecPayload, 'x'));
  absl::Status s = CheckRequest(ContainerRequest(big, ""));
  EXPECT_NE(s.message().find("the guest agent takes at most 4194304"), absl::string_view::npos)
      << s;

  ProcessSpec nul = Shell();
  nul.args[2] = std::string("tr\0ue", 5);
  s = CheckRequest(ContainerRequest(nul, ""));
  EXPECT_NE(s.message().find("malformed EXEC request"), absl::string_view::npos) << s;

  ProcessSpec no_name = Shell();
  no_name.env.push_back("=value");
  s = CheckRequest(ContainerRequest(no_name, ""));
  EXPECT_NE(s.message().find("environment entry without NAME=: =value"),
            absl::string_view::npos) << s;
}

}  // namespace
}  // namespace ember::oci
