#include "src/mmds/tcp_connection.h"

#include <gtest/gtest.h>

#include <string>

namespace ember::mmds {
namespace {

TcpSegment Seg(uint8_t flags, uint32_t seq, uint32_t ack, std::string_view data = "",
               uint16_t window = 65535) {
  TcpSegment s{};
  s.flags = flags;
  s.seq = seq;
  s.ack = ack;
  s.window = window;
  s.payload = {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
  return s;
}

// Both sides' sequence numbers cross 2^32 in the middle of the exchange.
TEST(TcpConnectionTest, SequenceNumbersWrap) {
  std::string response(5000, 'r');
  RequestHandler handler = [&](std::string_view head, uint32_t* skip) {
    EXPECT_EQ(head, "GET / HTTP/1.1\r\n\r\n");
    *skip = 0;
    return response;
  };
  uint32_t guest = 0xfffffff0u, isn = 0xfffffc00u;
  TcpConnection c(Seg(kSyn, guest, 0), 1000, isn, 0);
  std::optional<OutSegment> synack = c.Next(1500, 0);
  ASSERT_TRUE(synack);
  EXPECT_EQ(synack->seq, isn);
  EXPECT_EQ(synack->ack, guest + 1);
  EXPECT_FALSE(c.Receive(Seg(kAck, guest + 1, isn + 1), 0, handler));
  std::string req = "GET / HTTP/1.1\r\n\r\n";
  // In two pieces, the second past the wrap of the guest's numbers.
  EXPECT_FALSE(c.Receive(Seg(kAck, guest + 1, isn + 1, req.substr(0, 8)), 0, handler));
  EXPECT_FALSE(c.Receive(Seg(kAck, guest + 9, isn + 1, req.substr(8)), 0, handler));
  uint32_t acked = isn + 1;
  std::string got;
  for (int i = 0; i < 100 && got.size() < response.size(); i++) {
    while (std::optional<OutSegment> o = c.Next(1500, 0)) {
      EXPECT_EQ(o->ack, guest + 1 + static_cast<uint32_t>(req.size()));
      EXPECT_LE(o->payload.size(), 1000u);
      if (o->seq == acked + static_cast<uint32_t>(got.size()) && !o->payload.empty()) {
        got.append(reinterpret_cast<const char*>(o->payload.data()), o->payload.size());
      }
    }
    c.Receive(Seg(kAck, guest + 1 + static_cast<uint32_t>(req.size()),
                  isn + 1 + static_cast<uint32_t>(got.size())),
              0, handler);
  }
  EXPECT_TRUE(got == response) << got.size();
  EXPECT_FALSE(c.Deadline());  // all acked across the wrap
  // An ACK from before the wrap is old, not new.
  EXPECT_FALSE(c.Receive(Seg(kAck, guest + 1 + static_cast<uint32_t>(req.size()), isn + 1), 0,
                         handler));
  EXPECT_FALSE(c.HasSegment(0));
}

TEST(TcpConnectionTest, SynAgainBeforeTheHandshakeEnds) {
  RequestHandler handler = [](std::string_view, uint32_t*) { return std::string(); };
  TcpConnection c(Seg(kSyn, 100, 0), kDefaultMss, 5000, 0);
  ASSERT_TRUE(c.Next(1500, 0));
  EXPECT_FALSE(c.HasSegment(0));
  // The guest did not see our SYN-ACK and sends its SYN again: answered at once.
  EXPECT_FALSE(c.Receive(Seg(kSyn, 100, 0), 0, handler));
  std::optional<OutSegment> again = c.Next(1500, 0);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->flags, kSyn | kAck);
  // A different SYN is an error: RST.
  EXPECT_TRUE(c.Receive(Seg(kSyn, 999, 0), 0, handler));
  std::optional<OutSegment> rst = c.Next(1500, 0);
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->flags, kRst | kAck);
  EXPECT_EQ(rst->ack, 1000u);
  EXPECT_TRUE(c.done());
}

}  // namespace
}  // namespace ember::mmds
