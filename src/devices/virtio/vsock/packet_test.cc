// The vsock header's encoding and where a packet lies in its chain.
#include "src/devices/virtio/vsock/packet.h"

#include <gtest/gtest.h>

namespace ember::virtio::vsock {
namespace {

TEST(VsockPacket, HeaderIsLittleEndianAtTheSpecsOffsets) {
  PacketHeader h{0x0102030405060708, 2, 0x11121314, 0x21222324, 0x31323334, 1, 5,
                 0x41424344, 0x51525354, 0x61626364};
  uint8_t b[kHeaderSize];
  h.Encode(b);
  EXPECT_EQ(b[0], 0x08);
  EXPECT_EQ(b[7], 0x01);
  EXPECT_EQ(b[8], 2);
  EXPECT_EQ(b[16], 0x14);
  EXPECT_EQ(b[20], 0x24);
  EXPECT_EQ(b[24], 0x34);
  EXPECT_EQ(b[28], 1);
  EXPECT_EQ(b[30], 5);
  EXPECT_EQ(b[32], 0x44);
  EXPECT_EQ(b[36], 0x54);
  EXPECT_EQ(b[40], 0x64);
  EXPECT_EQ(b[43], 0x61);
  EXPECT_EQ(PacketHeader::Decode(b), h);
}

class ChainTest : public ::testing::Test {
 protected:
  GuestMemory mem_ = *GuestMemory::Create({{0, 1 << 20}});
};

TEST_F(ChainTest, ATxPacketIsGatheredFromAnyCut) {
  PacketHeader h;
  h.len = 6;
  h.op = kOpRw;
  std::vector<uint8_t> bytes(kHeaderSize);
  h.Encode(bytes.data());
  for (char c : std::string("abcdef")) bytes.push_back(c);
  bytes.push_back('!');  // beyond len: not payload
  ASSERT_TRUE(mem_.Write(0x1000, bytes).ok());
  DescriptorChain chain{0, {{0x1000, 3, false}, {0x1003, 42, false}, {0x102d, 8, false}}};
  TxError error;
  PacketHeader seen;
  std::optional<TxPacket> p = ReadTxPacket(mem_, chain, &error, &seen);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->header, h);
  std::string payload;
  for (const iovec& v : p->payload) payload.append(static_cast<char*>(v.iov_base), v.iov_len);
  EXPECT_EQ(payload, "abcdef");
}

TEST_F(ChainTest, BadTxChainsAreRefused) {
  PacketHeader h;
  h.len = 100;
  std::vector<uint8_t> bytes(kHeaderSize);
  h.Encode(bytes.data());
  ASSERT_TRUE(mem_.Write(0x1000, bytes).ok());
  TxError error;
  PacketHeader seen;
  EXPECT_FALSE(ReadTxPacket(mem_, {0, {{0x1000, 44, false}}}, &error, &seen));
  EXPECT_EQ(error, TxError::kPayloadTooLong);
  EXPECT_EQ(seen.len, 100u);
  EXPECT_FALSE(ReadTxPacket(mem_, {0, {{0x1000, 43, false}}}, &error, &seen));
  EXPECT_EQ(error, TxError::kMalformed);
  EXPECT_FALSE(ReadTxPacket(mem_, {0, {{0x1000, 44, true}}}, &error, &seen));
  EXPECT_EQ(error, TxError::kMalformed);
  h.len = kMaxPayload + 1;
  h.Encode(bytes.data());
  ASSERT_TRUE(mem_.Write(0x1000, bytes).ok());
  EXPECT_FALSE(ReadTxPacket(mem_, {0, {{0x1000, 44 + kMaxPayload + 1, false}}}, &error, &seen));
  EXPECT_EQ(error, TxError::kPayloadTooLong);
}

TEST_F(ChainTest, AnRxChainSplitsIntoHeaderAndPayloadSpace) {
  DescriptorChain chain{0, {{0x2000, 10, true}, {0x3000, 40, true}, {0x4000, 100, true}}};
  std::optional<RxBuffer> b = SplitRxChain(mem_, chain);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->payload_size, 106u);
  PacketHeader h;
  h.src_port = 0xabcdef01;
  h.fwd_cnt = 77;
  WriteHeader(*b, h);
  uint8_t back[kHeaderSize];
  ASSERT_TRUE(mem_.Read(0x2000, std::span(back, 10)).ok());
  ASSERT_TRUE(mem_.Read(0x3000, std::span(back + 10, 34)).ok());
  EXPECT_EQ(PacketHeader::Decode(back), h);
  EXPECT_FALSE(SplitRxChain(mem_, {0, {{0x2000, 43, true}}}));
  EXPECT_FALSE(SplitRxChain(mem_, {0, {{0x2000, 100, false}}}));
}

}  // namespace
}  // namespace ember::virtio::vsock
