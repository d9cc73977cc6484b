#include "src/agent/protocol.h"

#include <functional>

#include <gtest/gtest.h>

namespace ember::agent {
namespace {

using Result = FrameDecoder::Result;

std::string Header(uint32_t length, uint8_t type) {
  std::string h = EncodeU32(length);
  h.push_back(static_cast<char>(type));
  return h;
}

TEST(FrameTest, RoundTripsByteByByte) {
  std::string wire;
  AppendFrame(&wire, Type::kHello, EncodeU32(kVersion));
  AppendFrame(&wire, Type::kStdinEof, "");
  AppendFrame(&wire, Type::kStdout, std::string(1000, 'x'));
  FrameDecoder decoder;
  std::vector<Frame> frames;
  std::string error;
  for (char c : wire) {
    decoder.Feed(std::string_view(&c, 1));
    Frame f;
    while (decoder.Next(&f, &error) == Result::kFrame) frames.push_back(f);
  }
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, Type::kHello);
  uint32_t version;
  ASSERT_TRUE(DecodeU32(frames[0].payload, &version));
  EXPECT_EQ(version, kVersion);
  EXPECT_EQ(frames[1].type, Type::kStdinEof);
  EXPECT_TRUE(frames[1].payload.empty());
  EXPECT_EQ(frames[2].payload, std::string(1000, 'x'));
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(FrameTest, LengthIsLittleEndian) {
  std::string wire;
  AppendFrame(&wire, Type::kStdin, std::string(0x102, 'a'));
  EXPECT_EQ(wire.substr(0, 5), std::string("\x02\x01\x00\x00\x03", 5));
}

TEST(FrameTest, AcceptsTheMaximumPayload) {
  std::string wire;
  AppendFrame(&wire, Type::kStdin, std::string(kMaxPayload, 'a'));
  FrameDecoder decoder;
  decoder.Feed(wire);
  Frame f;
  std::string error;
  ASSERT_EQ(decoder.Next(&f, &error), Result::kFrame);
  EXPECT_EQ(f.payload.size(), kMaxPayload);
}

TEST(FrameTest, RejectsAnOversizedFrameFromItsHeaderAlone) {
  for (uint32_t length : {kMaxPayload + 1, 0xffffffffu}) {
    FrameDecoder decoder;
    decoder.Feed(Header(length, static_cast<uint8_t>(Type::kStdin)));
    Frame f;
    std::string error;
    EXPECT_EQ(decoder.Next(&f, &error), Result::kBad);
    EXPECT_NE(error.find("exceeds"), std::string::npos) << error;
    // The stream cannot be resynchronised: it stays failed.
    std::string good;
    AppendFrame(&good, Type::kStdinEof, "");
    decoder.Feed(good);
    EXPECT_EQ(decoder.Next(&f, &error), Result::kBad);
  }
}

TEST(FrameTest, ExecAloneMayBeLarger) {
  EXPECT_EQ(MaxPayload(Type::kExec), kMaxExecPayload);
  EXPECT_EQ(MaxPayload(Type::kStdout), kMaxPayload);
  std::string wire;
  AppendFrame(&wire, Type::kExec, std::string(kMaxExecPayload, 'e'));
  FrameDecoder decoder;
  decoder.Feed(wire);
  Frame f;
  std::string error;
  ASSERT_EQ(decoder.Next(&f, &error), Result::kFrame) << error;
  EXPECT_EQ(f.payload.size(), kMaxExecPayload);
  for (Type type : {Type::kExec, Type::kStdin, Type::kStdout}) {
    FrameDecoder refusing;
    refusing.Feed(Header(MaxPayload(type) + 1, static_cast<uint8_t>(type)));
    EXPECT_EQ(refusing.Next(&f, &error), Result::kBad);
    EXPECT_NE(error.find("exceeds the maximum of " + std::to_string(MaxPayload(type))),
              std::string::npos) << error;
  }
}

TEST(FrameTest, EachSideTakesOnlyThePeersTypes) {
  Frame f;
  std::string error;
  FrameDecoder agent_side(FrameDecoder::From::kClient);
  agent_side.Feed(Header(0, static_cast<uint8_t>(Type::kStdout)));
  EXPECT_EQ(agent_side.Next(&f, &error), Result::kBad);
  EXPECT_EQ(error, "frame type 18 is not one the client sends");
  // A guest's EXEC header is refused before its 4 MiB are buffered.
  FrameDecoder client_side(FrameDecoder::From::kAgent);
  client_side.Feed(Header(kMaxExecPayload, static_cast<uint8_t>(Type::kExec)));
  EXPECT_EQ(client_side.Next(&f, &error), Result::kBad);
  EXPECT_EQ(error, "frame type 2 is not one the agent sends");
  for (auto from : {FrameDecoder::From::kClient, FrameDecoder::From::kAgent}) {
    FrameDecoder both(from);
    both.Feed(Header(4, static_cast<uint8_t>(Type::kHello)) + EncodeU32(kVersion));
    EXPECT_EQ(both.Next(&f, &error), Result::kFrame) << error;
  }
}

TEST(FrameTest, RejectsUnknownTypes) {
  for (uint8_t type : {0, 8, 15, 23, 255}) {
    FrameDecoder decoder;
    decoder.Feed(Header(0, type));
    Frame f;
    std::string error;
    EXPECT_EQ(decoder.Next(&f, &error), Result::kBad) << int(type);
  }
}

TEST(FrameTest, WaitsForAWholeHeaderAndPayload) {
  FrameDecoder decoder;
  Frame f;
  std::string error;
  decoder.Feed(std::string("\x04\x00\x00", 3));
  EXPECT_EQ(decoder.Next(&f, &error), Result::kNeedMore);
  decoder.Feed(std::string("\x00\x05\x01\x02\x03", 5));
  EXPECT_EQ(decoder.Next(&f, &error), Result::kNeedMore);
  decoder.Feed(std::string("\x04", 1));
  EXPECT_EQ(decoder.Next(&f, &error), Result::kFrame);
  EXPECT_EQ(f.type, Type::kSignal);
}

ExecRequest Sample() {
  ExecRequest r;
  r.flags = ExecRequest::kFlagStdin;
  r.cwd = "/tmp";
  r.argv = {"sh", "-c", "echo hi", ""};
  r.env = {"A=1", "EMPTY="};
  return r;
}

TEST(ExecRequestTest, RoundTrips) {
  ExecRequest in = Sample(), out;
  std::string error;
  ASSERT_TRUE(DecodeExec(EncodeExec(in), &out, &error)) << error;
  EXPECT_EQ(out.flags, in.flags);
  EXPECT_EQ(out.cwd, in.cwd);
  EXPECT_EQ(out.argv, in.argv);
  EXPECT_EQ(out.env, in.env);
}

TEST(ExecRequestTest, RejectsEveryTruncationAndTrailingBytes) {
  std::string wire = EncodeExec(Sample());
  ExecRequest out;
  std::string error;
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_FALSE(DecodeExec(wire.substr(0, n), &out, &error)) << n;
  }
  EXPECT_FALSE(DecodeExec(wire + "x", &out, &error));
}

TEST(ExecRequestTest, RejectsAHugeCountWithoutAllocating) {
  std::string wire = EncodeU32(0) + EncodeU32(0) + EncodeU32(0xffffffffu);
  ExecRequest out;
  std::string error;
  EXPECT_FALSE(DecodeExec(wire, &out, &error));
}

TEST(ExecRequestTest, RejectsWhatExecCannotTake) {
  std::string error;
  ExecRequest out;
  ExecRequest r = Sample();
  r.argv = {};
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r.argv = {""};
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r.argv = {std::string("a\0b", 3)};
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = Sample();
  r.env = {"NOEQUALS"};
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r.env = {"=x"};
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = Sample();
  r.flags = 16;  // reserved for a later version
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  EXPECT_NE(error.find("flags"), std::string::npos);
  r.flags = ExecRequest::kFlagInit;  // an init needs a container root
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  EXPECT_NE(error.find("init flag needs a container"), std::string::npos) << error;
  r.flags = ExecRequest::kFlagInit | ExecRequest::kFlagContainer;
  for (const char* root : {"/", "//"}) {  // the guest's own root: every process
    r.container.root_dir = root;
    EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error)) << root;
  }
  r.container.root_dir = "/run/container";
  EXPECT_TRUE(DecodeExec(EncodeExec(r), &out, &error)) << error;
}

ExecRequest ContainerSample() {
  ExecRequest r = Sample();
  r.flags |= ExecRequest::kFlagContainer | ExecRequest::kFlagTty;
  r.container.uid = 1000;
  r.container.gid = 100;
  r.container.groups = {10, 20, 4294967295u};
  r.container.root_device = "/dev/vdb";
  r.container.root_dir = "/run/container";
  r.container.hostname = "box";
  r.container.mounts = {{"tmpfs", "tmpfs", "/run", 6, "mode=755,size=65536k"},
                        {"", "/data", "/data", 4096 | 1, ""}};
  r.container.set_capabilities = true;
  r.container.cap_bounding = 0x1ffffffffffull;
  r.container.cap_effective = 1ull << 40 | 1;
  r.container.cap_permitted = 0xa80425fb;
  r.container.cap_ambient = 1ull << 63;
  r.container.no_new_privileges = true;
  r.container.root_readonly = true;
  return r;
}

TEST(ExecRequestTest, RlimitsRoundTripAndAreChecked) {
  ExecRequest in = ContainerSample(), out;
  in.container.rlimits = {{7, 1024, 4096}, {6, 10, 10}, {3, 0, ~0ull}};
  std::string error;
  ASSERT_TRUE(DecodeExec(EncodeExec(in), &out, &error)) << error;
  EXPECT_EQ(out.container.rlimits, in.container.rlimits);
  for (auto bad : {std::vector<ContainerSpec::Rlimit>{{16, 1, 1}},   // no such resource
                   std::vector<ContainerSpec::Rlimit>{{7, 5, 4}},    // soft above hard
                   std::vector<ContainerSpec::Rlimit>{{7, 1, 1}, {7, 2, 2}}}) {  // twice
    ExecRequest r = in;
    r.container.rlimits = bad;
    EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  }
}

TEST(ExecRequestTest, NetworkRoundTripsAndIsChecked) {
  ExecRequest in = ContainerSample(), out;
  in.flags |= ExecRequest::kFlagInit;
  in.container.has_network = true;
  in.container.network.mac = {0x02, 0x42, 0xac, 0x11, 0x00, 0xff};
  in.container.network.mtu = 1450;
  in.container.network.addresses = {{0x0a580005, 16}, {0xc0a80001, 32}};
  in.container.network.neighbours = {{0xa9fe0101, {0x02, 0, 0, 0, 0, 0x01}}};
  in.container.network.routes = {{0, 0, 0x0a580001, 0, NetworkSpec::Route::kOnLink},
                                 {0x0a580000, 16, 0, 253, 0}};
  std::string error;
  std::string wire = EncodeExec(in);
  ASSERT_TRUE(DecodeExec(wire, &out, &error)) << error;
  EXPECT_TRUE(out.container.has_network);
  EXPECT_EQ(out.container.network, in.container.network);
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_FALSE(DecodeExec(wire.substr(0, n), &out, &error)) << n;
  }
  ExecRequest r = in;
  r.container.network.addresses[0].prefix = 33;
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = in;
  r.container.network.routes[1].prefix = 40;
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = in;
  r.container.network.routes[0].flags = 2;  // only on-link is known
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = in;
  r.container.network.routes[0].scope = 256;
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = in;
  r.container.network.routes.resize(NetworkSpec::kMaxEntries + 1);
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  r = in;
  r.container.network.neighbours.resize(NetworkSpec::kMaxEntries + 1);
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  // Once per guest: an exec'd process does not carry it.
  r = in;
  r.flags &= ~ExecRequest::kFlagInit;
  EXPECT_FALSE(DecodeExec(EncodeExec(r), &out, &error));
  EXPECT_EQ(error, "EXEC request's network needs the init flag");
}

TEST(ExecRequestTest, ContainerSpecRoundTripsAndIsCheckedLikeTheRest) {
  ExecRequest in = ContainerSample(), out;
  std::string error;
  std::string wire = EncodeExec(in);
  ASSERT_TRUE(DecodeExec(wire, &out, &error)) << error;
  EXPECT_EQ(out.flags, in.flags);
  EXPECT_EQ(out.container.uid, 1000u);
  EXPECT_EQ(out.container.gid, 100u);
  EXPECT_EQ(out.container.groups, in.container.groups);
  EXPECT_EQ(out.container.root_device, "/dev/vdb");
  EXPECT_EQ(out.container.root_dir, "/run/container");
  EXPECT_EQ(out.container.hostname, "box");
  EXPECT_EQ(out.container.mounts, in.container.mounts);
  EXPECT_TRUE(out.container.set_capabilities);
  EXPECT_TRUE(out.container.no_new_privileges);
  EXPECT_TRUE(out.container.root_readonly);
  EXPECT_EQ(out.container.cap_bounding, in.container.cap_bounding);
  EXPECT_EQ(out.container.cap_effective, in.container.cap_effective);
  EXPECT_EQ(out.container.cap_permitted, in.container.cap_permitted);
  EXPECT_EQ(out.container.cap_inheritable, 0u);
  EXPECT_EQ(out.container.cap_ambient, in.container.cap_ambient);
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_FALSE(DecodeExec(wire.substr(0, n), &out, &error)) << n;
  }
  // Without the flag the block is trailing bytes.
  ExecRequest plain = in;
  plain.flags &= ~ExecRequest::kFlagContainer;
  EXPECT_FALSE(DecodeExec(EncodeExec(plain) + wire.substr(EncodeExec(plain).size()), &out,
                          &error));
  ExecRequest bad = in;
  bad.container.root_dir = "relative";
  EXPECT_FALSE(DecodeExec(EncodeExec(bad), &out, &error));
  bad = in;
  bad.container.root_dir = "";  // a device needs a directory
  EXPECT_FALSE(DecodeExec(EncodeExec(bad), &out, &error));
  bad = in;
  bad.container.hostname = std::string(65, 'h');
  EXPECT_FALSE(DecodeExec(EncodeExec(bad), &out, &error));
  // A mount target stays in the root.
  for (const char* target : {"relative", "", "/", "/a/../../etc", "/..", "/x/.."}) {
    bad = in;
    bad.container.mounts[0].target = target;
    EXPECT_FALSE(DecodeExec(EncodeExec(bad), &out, &error)) << target;
  }
  bad = in;
  bad.container.mounts[1].source = "/.ember-binds/../../etc";  // a bind's source too
  EXPECT_FALSE(DecodeExec(EncodeExec(bad), &out, &error));
  bad = in;
  bad.container.mounts[0].target = "/a..b/..c";  // names, not ".."
  EXPECT_TRUE(DecodeExec(EncodeExec(bad), &out, &error)) << error;
  bad = in;
  bad.container.root_device = "";  // mounts need a root of the container's own
  bad.container.root_dir = "/r";
  EXPECT_FALSE(DecodeExec(EncodeExec(bad), &out, &error));
  // A hostile mount count too: it is the u32 after the hostname.
  ExecRequest no_mounts = in;
  no_mounts.container.mounts.clear();
  std::string wire_nm = EncodeExec(no_mounts);
  size_t count_at = wire_nm.size() - 4 - 5 * 8 - 4 - 4;  // before the cap bits, masks, rlimits
  wire_nm.replace(count_at, 4, EncodeU32(0xffffffffu));
  EXPECT_FALSE(DecodeExec(wire_nm, &out, &error));
  // Bits above the three defined are refused.
  std::string bits = EncodeExec(in);
  bits.replace(bits.size() - 4 - 5 * 8 - 4, 4, EncodeU32(8));
  EXPECT_FALSE(DecodeExec(bits, &out, &error));
  // A hostile group count is refused before any allocation.
  std::string huge = EncodeExec(in);
  size_t at = EncodeExec(Sample()).size() + 8;  // after uid and gid
  huge.replace(at, 4, EncodeU32(0xffffffffu));
  EXPECT_FALSE(DecodeExec(huge, &out, &error));
}

SyncRequest AVolume() {
  SyncRequest r;
  r.device = "/dev/vdb";
  r.top = "/.ember-binds/0";
  r.entries = {{TreeEntry::kDirectory, "", 01777, 0, 0, ""},
               {TreeEntry::kDirectory, "..2026_12_04", 0755, 0, 2000, ""},
               {TreeEntry::kFile, "..2026_12_04/key", 0644, 0, 2000, std::string("a\0b", 3)},
               {TreeEntry::kLink, "..data", 0, 0, 0, "..2026_12_04"},
               {TreeEntry::kLink, "key", 0, 0, 0, "..data/key"}};
  return r;
}

TEST(SyncRequestTest, RoundTripsWithBinaryFiles) {
  SyncRequest r = AVolume();
  SyncRequest back;
  std::string error;
  ASSERT_TRUE(DecodeSync(EncodeSync(r), &back, &error)) << error;
  EXPECT_EQ(back, r);
  EXPECT_EQ(back.entries[2].data.size(), 3u);
  // A whole frame of it: SYNC is the client's, SYNCED the agent's.
  std::string wire;
  AppendFrame(&wire, Type::kSync, EncodeSync(r));
  AppendFrame(&wire, Type::kSynced, "");
  FrameDecoder agent(FrameDecoder::From::kClient);
  agent.Feed(wire);
  Frame f;
  EXPECT_EQ(agent.Next(&f, &error), Result::kFrame);
  EXPECT_EQ(f.type, Type::kSync);
  EXPECT_EQ(agent.Next(&f, &error), Result::kBad);
  EXPECT_GT(MaxPayload(Type::kSync), kMaxPayload);
}

TEST(SyncRequestTest, RefusesWhatTheAgentCouldNotWalk) {
  auto refused = [](const std::function<void(SyncRequest&)>& change) {
    SyncRequest r = AVolume();
    change(r);
    SyncRequest back;
    std::string error;
    bool ok = DecodeSync(EncodeSync(r), &back, &error);
    EXPECT_FALSE(ok || error.empty());
    return !ok;
  };
  EXPECT_TRUE(refused([](SyncRequest& r) { r.device = "vdb"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.top = "/"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.top = "/.ember-binds/../etc"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries.erase(r.entries.begin()); }));
  EXPECT_TRUE(refused([](SyncRequest& r) { std::swap(r.entries[1], r.entries[2]); }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].path = "../key"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].path = "/key"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].path = "a//key"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].path = "..data/key"; }));  // a link
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].path = "..data"; }));      // twice
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].path = ".ember-sync.new"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[4].data = ""; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[1].data = "x"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[0].data = "x"; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[2].mode = 010644; }));
  EXPECT_TRUE(refused([](SyncRequest& r) { r.entries[2].kind = TreeEntry::Kind(4); }));
  // As many entries as it takes, and no more.
  SyncRequest big = AVolume();
  while (big.entries.size() < SyncRequest::kMaxEntries) {
    big.entries.push_back({TreeEntry::kFile, "f" + std::to_string(big.entries.size()), 0644});
  }
  SyncRequest back;
  std::string error;
  EXPECT_TRUE(DecodeSync(EncodeSync(big), &back, &error)) << error;
  big.entries.push_back({TreeEntry::kFile, "one-more", 0644});
  EXPECT_FALSE(DecodeSync(EncodeSync(big), &back, &error));
}

TEST(PayloadTest, ResizeRoundTrips) {
  WindowSize size;
  ASSERT_TRUE(DecodeResize(EncodeResize({24, 80}), &size));
  EXPECT_EQ(size.rows, 24);
  EXPECT_EQ(size.cols, 80);
  ASSERT_TRUE(DecodeResize(EncodeResize({65535, 1}), &size));
  EXPECT_EQ(size.rows, 65535);
  EXPECT_EQ(size.cols, 1);
  EXPECT_FALSE(DecodeResize("abc", &size));
}

TEST(PayloadTest, ExitAndErrorRoundTrip) {
  ExitStatus status;
  ASSERT_TRUE(DecodeExit(EncodeExit({true, 9}), &status));
  EXPECT_TRUE(status.signaled);
  EXPECT_EQ(status.value, 9u);
  ASSERT_TRUE(DecodeExit(EncodeExit({false, 255}), &status));
  EXPECT_FALSE(status.signaled);
  EXPECT_EQ(status.value, 255u);
  EXPECT_FALSE(DecodeExit(std::string("\x02\0\0\0\0", 5), &status));
  EXPECT_FALSE(DecodeExit(std::string("\0\0\0\0", 4), &status));

  ErrorKind kind;
  std::string message;
  ASSERT_TRUE(DecodeError(EncodeError(ErrorKind::kNotFound, "no such"), &kind, &message));
  EXPECT_EQ(kind, ErrorKind::kNotFound);
  EXPECT_EQ(message, "no such");
  EXPECT_FALSE(DecodeError("", &kind, &message));
  // A kind from a later version still reads as an error.
  ASSERT_TRUE(DecodeError("\x09later", &kind, &message));
  EXPECT_EQ(kind, ErrorKind::kOther);
  // An over-long message is cut to fit a frame.
  EXPECT_EQ(EncodeError(ErrorKind::kOther, std::string(2 * kMaxPayload, 'm')).size(),
            kMaxPayload);
}

TEST(PayloadTest, U32WantsExactlyFourBytes) {
  uint32_t v;
  EXPECT_FALSE(DecodeU32("abc", &v));
  EXPECT_FALSE(DecodeU32("abcde", &v));
  ASSERT_TRUE(DecodeU32(EncodeU32(0xdeadbeef), &v));
  EXPECT_EQ(v, 0xdeadbeefu);
}

}  // namespace
}  // namespace ember::agent
