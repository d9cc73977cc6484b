#include "src/mmds/packets.h"

#include <gtest/gtest.h>

#include <vector>

namespace ember::mmds {
namespace {

// A SYN from 10.0.0.2:40000 to 169.254.169.254:80 (seq 1000, MSS 1460),
// its checksums computed apart from this code (IPv4 0xca99, TCP 0x99af).
const std::vector<uint8_t> kSynFrame = {
    0x06, 0x01, 0x23, 0x45, 0x67, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
    0x00, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0xca, 0x99, 0x0a, 0x00, 0x00, 0x02,
    0xa9, 0xfe, 0xa9, 0xfe, 0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00,
    0x00, 0x60, 0x02, 0xff, 0xff, 0x99, 0xaf, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4};

const MacAddr kMmdsMac = {0x06, 0x01, 0x23, 0x45, 0x67, 0x01};

TEST(ChecksumTest, Rfc1071Example) {
  // RFC 1071 section 3: these bytes sum to 0xddf2.
  std::vector<uint8_t> b = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(ChecksumFinish(ChecksumAdd(b)), static_cast<uint16_t>(~0xddf2));
  // An odd length pads with a zero byte.
  std::vector<uint8_t> odd = {0x01};
  EXPECT_EQ(ChecksumFinish(ChecksumAdd(odd)), static_cast<uint16_t>(~0x0100));
}

TEST(ParseIpv4TcpTest, ReadsAReferenceSyn) {
  TcpSegment s;
  ASSERT_EQ(ParseIpv4Tcp(kSynFrame, false, &s), Ipv4Result::kTcp);
  EXPECT_EQ(s.src_ip, 0x0a000002u);
  EXPECT_EQ(s.dst_ip, 0xa9fea9feu);
  EXPECT_EQ(s.src_port, 40000);
  EXPECT_EQ(s.dst_port, 80);
  EXPECT_EQ(s.seq, 1000u);
  EXPECT_EQ(s.flags, kSyn);
  EXPECT_EQ(s.window, 65535);
  EXPECT_TRUE(s.payload.empty());
  EXPECT_EQ(ParseMssOption(s.options), 1460);
  EXPECT_EQ(s.src_mac, (MacAddr{2, 0, 0, 0, 0, 1}));
}

TEST(ParseIpv4TcpTest, ChecksEveryField) {
  TcpSegment s;
  auto with = [](size_t at, uint8_t v) {
    std::vector<uint8_t> f = kSynFrame;
    f[at] = v;
    return f;
  };
  EXPECT_EQ(ParseIpv4Tcp(with(25, 0x98), false, &s), Ipv4Result::kMalformed);  // IPv4 checksum
  EXPECT_EQ(ParseIpv4Tcp(with(51, 0xae), false, &s), Ipv4Result::kMalformed);  // TCP checksum
  // The guest may leave the TCP checksum to the device; never the IPv4 one.
  EXPECT_EQ(ParseIpv4Tcp(with(51, 0xae), true, &s), Ipv4Result::kTcp);
  EXPECT_EQ(ParseIpv4Tcp(with(25, 0x98), true, &s), Ipv4Result::kMalformed);
  EXPECT_EQ(ParseIpv4Tcp(with(14, 0x65), false, &s), Ipv4Result::kMalformed);  // version 6
  // Shorter than the IPv4 length says; padding after it is fine.
  std::vector<uint8_t> cut(kSynFrame.begin(), kSynFrame.end() - 1);
  EXPECT_EQ(ParseIpv4Tcp(cut, false, &s), Ipv4Result::kMalformed);
  std::vector<uint8_t> padded = kSynFrame;
  padded.resize(70, 0xee);
  ASSERT_EQ(ParseIpv4Tcp(padded, false, &s), Ipv4Result::kTcp);
  EXPECT_TRUE(s.payload.empty());
  EXPECT_EQ(ParseIpv4Tcp(std::span(kSynFrame).first(30), false, &s), Ipv4Result::kMalformed);
}

// Rewrites the IPv4 header checksum after a change.
std::vector<uint8_t> Resum(std::vector<uint8_t> f) {
  f[24] = f[25] = 0;
  uint16_t c = ChecksumFinish(ChecksumAdd(std::span(f).subspan(14, (f[14] & 0xf) * 4)));
  Store16(&f[24], c);
  return f;
}

TEST(ParseIpv4TcpTest, RefusesFragmentsAndOptions) {
  TcpSegment s;
  std::vector<uint8_t> f = kSynFrame;
  f[20] = 0x20;  // more fragments
  EXPECT_EQ(ParseIpv4Tcp(Resum(f), false, &s), Ipv4Result::kRefused);
  f[20] = 0x40, f[21] = 0x01;  // an offset
  EXPECT_EQ(ParseIpv4Tcp(Resum(f), false, &s), Ipv4Result::kRefused);
  // A header of 24 bytes: the options are refused (the TCP bytes shift, no matter).
  f = kSynFrame;
  f[14] = 0x46;
  EXPECT_EQ(ParseIpv4Tcp(Resum(f), false, &s), Ipv4Result::kRefused);
  f = kSynFrame;
  f[23] = 17;  // UDP
  EXPECT_EQ(ParseIpv4Tcp(Resum(f), false, &s), Ipv4Result::kNotTcp);
  f = kSynFrame;
  f[14] = 0x44;  // a header shorter than 20
  EXPECT_EQ(ParseIpv4Tcp(Resum(f), false, &s), Ipv4Result::kMalformed);
}

TEST(ParseIpv4TcpTest, RefusesBadTcpDataOffsets) {
  TcpSegment s;
  for (uint8_t offset : {0x40, 0x70, 0xf0}) {  // 16 bytes; 28 and 60, past the segment
    std::vector<uint8_t> f = kSynFrame;
    f[46] = offset;
    EXPECT_EQ(ParseIpv4Tcp(f, true, &s), Ipv4Result::kMalformed) << int(offset);
  }
}

TEST(ParseMssOptionTest, FirecrackersRules) {
  using V = std::vector<uint8_t>;
  EXPECT_EQ(ParseMssOption(V{}), std::nullopt);
  EXPECT_EQ(ParseMssOption(V{1, 1, 2, 4, 0x05, 0xb4}), 1460);
  EXPECT_EQ(ParseMssOption(V{0, 2, 4, 0x05, 0xb4}), std::nullopt);  // after the end
  EXPECT_EQ(ParseMssOption(V{3, 3, 7, 2, 4, 0x02, 0x00}), 512);      // after window scale
  EXPECT_EQ(ParseMssOption(V{2, 4, 0, 99}), 0);                      // under 100
  EXPECT_EQ(ParseMssOption(V{2, 4, 0, 100}), 100);
  EXPECT_EQ(ParseMssOption(V{2, 4, 0xff, 0xd7}), 65495);
  EXPECT_EQ(ParseMssOption(V{2, 4, 0xff, 0xd8}), 0);
  EXPECT_EQ(ParseMssOption(V{2, 3, 0x05}), 0);   // wrong length
  EXPECT_EQ(ParseMssOption(V{8, 1, 2, 4}), 0);   // a length under 2
  EXPECT_EQ(ParseMssOption(V{8, 10, 0}), 0);     // past the end
  EXPECT_EQ(ParseMssOption(V{2}), 0);
}

TEST(WriteTcpFrameTest, WritesWhatTheParserReadsBack) {
  std::vector<uint8_t> buf(200);
  TcpHeader h{0xa9fea9fe, 0x0a000002, 80, 40000, 7, 1001, kSyn | kAck, 2500, 1460};
  std::vector<uint8_t> payload = {'h', 'i', '!'};
  size_t n = WriteTcpFrame(buf, kMmdsMac, {2, 0, 0, 0, 0, 1}, h, payload);
  ASSERT_EQ(n, kTcpFrameOverhead + 4 + 3);
  TcpSegment s;
  ASSERT_EQ(ParseIpv4Tcp(std::span(buf).first(n), false, &s), Ipv4Result::kTcp);
  EXPECT_EQ(s.src_ip, 0xa9fea9feu);
  EXPECT_EQ(s.dst_port, 40000);
  EXPECT_EQ(s.seq, 7u);
  EXPECT_EQ(s.ack, 1001u);
  EXPECT_EQ(s.flags, kSyn | kAck);
  EXPECT_EQ(s.window, 2500);
  EXPECT_EQ(ParseMssOption(s.options), 1460);
  EXPECT_EQ(std::vector<uint8_t>(s.payload.begin(), s.payload.end()), payload);
  EXPECT_EQ(buf[22], 64);  // TTL
  // Too small a buffer: nothing written.
  EXPECT_EQ(WriteTcpFrame(std::span(buf).first(n - 1), kMmdsMac, {}, h, payload), 0u);
}

TEST(ArpTest, RequestsOnlyAndTheReply) {
  std::vector<uint8_t> req = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
                              0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 2,
                              0, 0, 0, 0, 0, 0, 169, 254, 169, 254};
  std::optional<ArpRequest> r = ParseArpRequest(req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->sender_ip, 0x0a000002u);
  EXPECT_EQ(r->target_ip, 0xa9fea9feu);
  std::vector<uint8_t> padded = req;
  padded.resize(60);
  EXPECT_TRUE(ParseArpRequest(padded));
  std::vector<uint8_t> reply = req;
  reply[21] = 2;
  EXPECT_FALSE(ParseArpRequest(reply));
  std::vector<uint8_t> bad_len = req;
  bad_len[18] = 8;
  EXPECT_FALSE(ParseArpRequest(bad_len));
  EXPECT_FALSE(ParseArpRequest(std::span(req).first(41)));

  std::vector<uint8_t> out(64);
  ASSERT_EQ(WriteArpReply(out, kMmdsMac, 0xa9fea9fe, r->sender_mac, r->sender_ip), 42u);
  EXPECT_EQ(Load16(&out[12]), kEtherTypeArp);
  EXPECT_EQ(Load16(&out[20]), 2);  // reply
  EXPECT_EQ(Load32(&out[28]), 0xa9fea9feu);
  EXPECT_EQ(Load32(&out[38]), 0x0a000002u);
  EXPECT_EQ(out[0], 2);  // to the guest
  EXPECT_EQ(WriteArpReply(std::span(out).first(41), kMmdsMac, 1, {}, 2), 0u);
}

}  // namespace
}  // namespace ember::mmds
