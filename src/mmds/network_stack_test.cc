#include "src/mmds/network_stack.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ember::mmds {
namespace {

constexpr uint32_t kGuestIp = 0x0a000002;
const MacAddr kGuestMac = {2, 0, 0, 0, 0, 1};
constexpr char kGet[] = "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: x\r\n\r\n";
constexpr char kAmi[] = "ami-12345678";

// A frame MMDS sent, decoded and checked.
struct Out {
  bool arp = false;
  TcpSegment s{};
  std::optional<uint16_t> mss;
  std::string payload;
  std::vector<uint8_t> bytes;
};

class NetworkStackTest : public ::testing::Test {
 protected:
  NetworkStackTest()
      : store_(kDefaultSizeLimit, TokenAuthority({1, 2, 3, 4, 5, 6, 7}, [this] { return now_; })) {
    EXPECT_TRUE(store_.Put(R"({"latest":{"meta-data":{"ami-id":"ami-12345678"}}})").ok());
    NetworkStackConfig config;
    config.isn_seed = 42;
    ns_ = std::make_unique<NetworkStack>(config, &store_, &metrics_, [this] { return now_; });
  }

  std::vector<uint8_t> Frame(uint16_t port, uint8_t flags, uint32_t seq, uint32_t ack,
                             std::string_view data = "", uint16_t window = 65535,
                             uint16_t mss = 0, uint16_t dst_port = kHttpPort) {
    std::vector<uint8_t> buf(70000);
    TcpHeader h{kGuestIp, kDefaultIpv4, port, dst_port, seq, ack, flags, window, mss};
    size_t n = WriteTcpFrame(buf, kGuestMac, kDefaultMac, h,
                             {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
    buf.resize(n);
    return buf;
  }

  bool Send(uint16_t port, uint8_t flags, uint32_t seq, uint32_t ack, std::string_view data = "",
            uint16_t window = 65535, uint16_t mss = 0) {
    return ns_->Detour(Frame(port, flags, seq, ack, data, window, mss));
  }

  // Every frame MMDS has now, each checked as the guest's stack would.
  std::vector<Out> Receive(size_t buf_size = 1514) {
    std::vector<Out> out;
    while (ns_->HasFrames()) {
      std::vector<uint8_t> buf(buf_size);
      size_t n = ns_->WriteNextFrame(buf);
      if (n == 0) break;
      buf.resize(n);
      Out o;
      o.bytes = buf;
      EXPECT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + 6),
                std::vector<uint8_t>(kGuestMac.begin(), kGuestMac.end()));
      if (Load16(&buf[12]) == kEtherTypeArp) {
        o.arp = true;
      } else {
        EXPECT_EQ(ParseIpv4Tcp(o.bytes, false, &o.s), Ipv4Result::kTcp);
        EXPECT_EQ(o.s.src_ip, kDefaultIpv4);
        EXPECT_EQ(o.s.dst_ip, kGuestIp);
        o.mss = ParseMssOption(o.s.options);
        o.payload.assign(o.s.payload.begin(), o.s.payload.end());
      }
      out.push_back(std::move(o));
      EXPECT_LT(out.size(), 10000u);
    }
    return out;
  }

  Out ReceiveOne() {
    std::vector<Out> out = Receive();
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? Out{} : out[0];
  }

  // The three-way handshake from `port`; our next sequence number is
  // 1001, MMDS's is returned.
  uint32_t Connect(uint16_t port, uint16_t window = 65535) {
    EXPECT_TRUE(Send(port, kSyn, 1000, 0, "", window, 1460));
    Out synack = ReceiveOne();
    EXPECT_EQ(synack.s.flags, kSyn | kAck);
    EXPECT_EQ(synack.s.ack, 1001u);
    EXPECT_EQ(synack.mss, kOurMss);
    EXPECT_EQ(synack.s.window, kMaxRequestBytes);
    EXPECT_TRUE(Send(port, kAck, 1001, synack.s.seq + 1, "", window));
    EXPECT_TRUE(Receive().empty());
    return synack.s.seq + 1;
  }

  // Reads data segments in order, acking each; the bytes.
  std::string ReadAll(uint16_t port, uint32_t* their_seq, uint32_t my_seq) {
    std::string data;
    for (int round = 0; round < 1000; round++) {
      std::vector<Out> out = Receive();
      if (out.empty()) break;
      for (const Out& o : out) {
        EXPECT_EQ(o.s.dst_port, port);
        if (o.s.seq == *their_seq) {
          data += o.payload;
          *their_seq += o.payload.size() + ((o.s.flags & kFin) ? 1 : 0);
        }
      }
      Send(port, kAck, my_seq, *their_seq);
    }
    return data;
  }

  uint64_t now_ = 100000;
  DataStore store_;
  MmdsMetrics metrics_;
  std::unique_ptr<NetworkStack> ns_;
};

std::string Body(const std::string& response) {
  size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

TEST_F(NetworkStackTest, AnswersArpForItsAddressOnly) {
  std::vector<uint8_t> req = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
                              0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 2,
                              0, 0, 0, 0, 0, 0, 169, 254, 169, 254};
  EXPECT_TRUE(ns_->Detour(req));
  Out reply = ReceiveOne();
  ASSERT_TRUE(reply.arp);
  EXPECT_EQ(Load16(&reply.bytes[20]), 2);
  EXPECT_EQ(std::vector<uint8_t>(reply.bytes.begin() + 22, reply.bytes.begin() + 28),
            std::vector<uint8_t>(kDefaultMac.begin(), kDefaultMac.end()));
  EXPECT_EQ(Load32(&reply.bytes[28]), kDefaultIpv4);
  EXPECT_EQ(Load32(&reply.bytes[38]), kGuestIp);
  // For another address, or not a request: the TAP's.
  req[41] = 1;
  EXPECT_FALSE(ns_->Detour(req));
  req[41] = 254, req[21] = 2;
  EXPECT_FALSE(ns_->Detour(req));
  EXPECT_EQ(metrics_.rx_accepted, 1u);
  EXPECT_EQ(metrics_.tx_frames, 1u);
  EXPECT_EQ(metrics_.tx_bytes, 42u);
}

TEST_F(NetworkStackTest, OtherTrafficPassesThrough) {
  std::vector<uint8_t> f = Frame(40000, kSyn, 1, 0);
  Store32(&f[30], 0x0a000001);  // another destination (checksums do not matter here)
  EXPECT_FALSE(ns_->Detour(f));
  f = Frame(40000, kSyn, 1, 0);
  Store16(&f[12], 0x86dd);  // IPv6
  EXPECT_FALSE(ns_->Detour(f));
  Store16(&f[12], 0x8100);  // VLAN
  EXPECT_FALSE(ns_->Detour(f));
  EXPECT_FALSE(ns_->Detour(std::span(f).first(13)));
  EXPECT_EQ(metrics_.rx_bad_eth, 1u);
  EXPECT_FALSE(ns_->HasFrames());
  EXPECT_EQ(metrics_.rx_accepted, 0u);
}

TEST_F(NetworkStackTest, GetOverTcpThenClose) {
  uint32_t theirs = Connect(40000);
  EXPECT_EQ(metrics_.connections_created, 1u);
  EXPECT_TRUE(Send(40000, kAck | kPsh, 1001, theirs, kGet));
  std::string response = ReadAll(40000, &theirs, 1001 + sizeof(kGet) - 1);
  EXPECT_EQ(response.substr(0, 15), "HTTP/1.1 200 \r\n");
  EXPECT_EQ(Body(response), kAmi);
  // The guest closes; MMDS answers with its FIN and forgets the connection
  // once that is acked.
  uint32_t mine = 1001 + sizeof(kGet) - 1;
  EXPECT_TRUE(Send(40000, kAck | kFin, mine, theirs));
  Out fin = ReceiveOne();
  EXPECT_EQ(fin.s.flags, kAck | kFin);
  EXPECT_EQ(fin.s.ack, mine + 1);
  EXPECT_EQ(fin.s.seq, theirs);
  EXPECT_EQ(ns_->connection_count(), 1u);
  EXPECT_TRUE(Send(40000, kAck, mine + 1, theirs + 1));
  EXPECT_EQ(ns_->connection_count(), 0u);
  EXPECT_EQ(metrics_.connections_destroyed, 1u);
  EXPECT_TRUE(Receive().empty());
  EXPECT_EQ(metrics_.rx_accepted_err, 0u);
}

TEST_F(NetworkStackTest, RequestSplitAcrossManySegments) {
  uint32_t theirs = Connect(40001);
  std::string req = kGet;
  for (size_t i = 0; i < req.size(); i++) {
    EXPECT_TRUE(Send(40001, kAck, 1001 + i, theirs, req.substr(i, 1)));
    std::vector<Out> out = Receive();
    ASSERT_EQ(out.size(), 1u) << i;  // an ACK, then with the last byte the response
    EXPECT_EQ(out[0].s.ack, 1001 + i + 1);
    EXPECT_EQ(out[0].payload.empty(), i + 1 < req.size());
  }
}

TEST_F(NetworkStackTest, PipelinedRequestsAreAnsweredInTurn) {
  uint32_t theirs = Connect(40002);
  std::string two = std::string(kGet) + "GET /latest HTTP/1.1\r\n\r\n";
  EXPECT_TRUE(Send(40002, kAck, 1001, theirs, two));
  std::string responses = ReadAll(40002, &theirs, 1001 + two.size());
  size_t second = responses.find("HTTP/1.1 200", 1);
  ASSERT_NE(second, std::string::npos);
  EXPECT_EQ(Body(responses.substr(0, second)), kAmi);
  EXPECT_EQ(Body(responses.substr(second)), "meta-data/");
}

TEST_F(NetworkStackTest, BigResponseIsSegmentedByMssAndWindow) {
  ASSERT_TRUE(store_.Put("{\"big\":\"" + std::string(40000, 'x') + "\"}").ok());
  EXPECT_TRUE(Send(40003, kSyn, 1000, 0, "", 65535, 536));
  Out synack = ReceiveOne();
  uint32_t theirs = synack.s.seq + 1;
  // A window of 3000 bytes the guest never opens further.
  EXPECT_TRUE(Send(40003, kAck, 1001, theirs, "", 3000));
  std::string req = "GET /big HTTP/1.1\r\n\r\n";
  EXPECT_TRUE(Send(40003, kAck, 1001, theirs, req, 3000));
  std::vector<Out> out = Receive();
  size_t sent = 0;
  for (const Out& o : out) {
    EXPECT_LE(o.payload.size(), 536u);
    sent += o.payload.size();
  }
  EXPECT_EQ(sent, 3000u);
  EXPECT_EQ(out.size(), 6u);  // 5 x 536 + 320
}

TEST_F(NetworkStackTest, ZeroWindowStopsAndProbes) {
  uint32_t theirs = Connect(40004, 0);
  uint32_t mine = 1001 + sizeof(kGet) - 1;
  EXPECT_TRUE(Send(40004, kAck, 1001, theirs, kGet, 0));
  Out ack = ReceiveOne();  // the request acked, no data
  EXPECT_TRUE(ack.payload.empty());
  EXPECT_EQ(ack.s.ack, mine);
  EXPECT_FALSE(ns_->HasFrames());
  ASSERT_TRUE(ns_->NextDeadline());
  now_ = *ns_->NextDeadline();
  Out probe = ReceiveOne();
  EXPECT_TRUE(probe.payload.empty());
  EXPECT_EQ(probe.s.seq, theirs - 1);  // an old byte: the guest must answer
  // Probes back off.
  uint64_t first = now_;
  now_ = *ns_->NextDeadline();
  ReceiveOne();
  EXPECT_GT(now_ - first, kRtoMs);
  // The window opens: the response flows.
  EXPECT_TRUE(Send(40004, kAck, mine, theirs, "", 65535));
  std::string response = ReadAll(40004, &theirs, mine);
  EXPECT_EQ(Body(response), kAmi);
}

TEST_F(NetworkStackTest, ZeroWindowForeverIsReset) {
  uint32_t theirs = Connect(40005, 0);
  EXPECT_TRUE(Send(40005, kAck, 1001, theirs, kGet, 0));
  Receive();
  int probes = 0;
  while (ns_->NextDeadline() && probes < 100) {
    now_ = *ns_->NextDeadline();
    for (const Out& o : Receive()) {
      if (o.s.flags & kRst) {
        EXPECT_EQ(probes, kMaxRetransmissions);
        EXPECT_EQ(ns_->connection_count(), 0u);
        return;
      }
      probes++;
      // The guest answers each probe, still with no room.
      Send(40005, kAck, 1001 + sizeof(kGet) - 1, theirs, "", 0);
    }
  }
  FAIL() << "never reset after " << probes << " probes";
}

TEST_F(NetworkStackTest, OutOfOrderIsDroppedAndReacked) {
  uint32_t theirs = Connect(40006);
  std::string req = kGet;
  // The second half first: dropped, the first byte asked again.
  EXPECT_TRUE(Send(40006, kAck, 1001 + 10, theirs, req.substr(10)));
  Out ack = ReceiveOne();
  EXPECT_EQ(ack.s.ack, 1001u);
  EXPECT_TRUE(ack.payload.empty());
  EXPECT_EQ(metrics_.rx_accepted_unusual, 1u);
  EXPECT_TRUE(Send(40006, kAck, 1001, theirs, req.substr(0, 10)));
  EXPECT_EQ(ReceiveOne().s.ack, 1011u);
  // Sent again overlapping what came: the new part is taken.
  EXPECT_TRUE(Send(40006, kAck, 1001 + 5, theirs, req.substr(5)));
  std::string response = ReadAll(40006, &theirs, 1001 + req.size());
  EXPECT_EQ(Body(response), kAmi);
}

TEST_F(NetworkStackTest, GuestRetransmissionIsAckedNotServedTwice) {
  uint32_t theirs = Connect(40007);
  EXPECT_TRUE(Send(40007, kAck, 1001, theirs, kGet));
  std::vector<Out> first = Receive();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_FALSE(first[0].payload.empty());
  // Our ACK was lost: the guest sends the request again.
  EXPECT_TRUE(Send(40007, kAck, 1001, theirs, kGet));
  std::vector<Out> again = Receive();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].payload.empty());
  EXPECT_EQ(again[0].s.ack, 1001 + sizeof(kGet) - 1);
}

TEST_F(NetworkStackTest, LostResponseIsSentAgain) {
  uint32_t theirs = Connect(40008);
  uint32_t mine = 1001 + sizeof(kGet) - 1;
  EXPECT_TRUE(Send(40008, kAck, 1001, theirs, kGet));
  Out lost = ReceiveOne();
  ASSERT_FALSE(lost.payload.empty());
  EXPECT_FALSE(ns_->HasFrames());
  now_ += kRtoMs;  // timeout: the same bytes again
  Out again = ReceiveOne();
  EXPECT_EQ(again.s.seq, lost.s.seq);
  EXPECT_EQ(again.payload, lost.payload);
  // A duplicate ACK sends it again at once.
  EXPECT_TRUE(Send(40008, kAck, mine, theirs));
  Out dup = ReceiveOne();
  EXPECT_EQ(dup.payload, lost.payload);
  // Acked: nothing more, no timer.
  EXPECT_TRUE(Send(40008, kAck, mine, theirs + lost.payload.size()));
  EXPECT_TRUE(Receive().empty());
  EXPECT_FALSE(ns_->NextDeadline());
}

TEST_F(NetworkStackTest, HalfOpenConnectionsTimeOut) {
  for (uint16_t port = 41000; port < 41000 + kMaxConnections; port++) {
    EXPECT_TRUE(Send(port, kSyn, 1000, 0));
  }
  EXPECT_EQ(Receive().size(), kMaxConnections);
  EXPECT_EQ(ns_->connection_count(), kMaxConnections);
  size_t synacks = 0, rsts = 0;
  for (int i = 0; i < 1000 && ns_->NextDeadline(); i++) {
    now_ = *ns_->NextDeadline();
    for (const Out& o : Receive()) {
      if (o.s.flags & kRst) rsts++;
      else if (o.s.flags == (kSyn | kAck)) synacks++;
    }
  }
  EXPECT_EQ(synacks, kMaxConnections * kMaxRetransmissions);
  EXPECT_EQ(rsts, kMaxConnections);
  EXPECT_EQ(ns_->connection_count(), 0u);
  EXPECT_EQ(metrics_.connections_destroyed, kMaxConnections);
}

TEST_F(NetworkStackTest, FullTableRefusesThenEvictsIdle) {
  for (uint16_t port = 42000; port < 42000 + kMaxConnections; port++) Connect(port);
  EXPECT_TRUE(Send(43000, kSyn, 5000, 0));
  Out refused = ReceiveOne();
  EXPECT_EQ(refused.s.flags, kRst | kAck);
  EXPECT_EQ(refused.s.ack, 5001u);  // matches the SYN, so the guest takes it
  EXPECT_EQ(ns_->connection_count(), kMaxConnections);
  now_ += kEvictAfterMs;
  EXPECT_TRUE(Send(43000, kSyn, 5000, 0));
  std::vector<Out> out = Receive();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].s.flags & kRst);  // to the evicted one
  EXPECT_EQ(out[0].s.dst_port, 42000);
  EXPECT_EQ(out[1].s.flags, kSyn | kAck);
  EXPECT_EQ(ns_->connection_count(), kMaxConnections);
  EXPECT_EQ(metrics_.connections_created, kMaxConnections + 1);
  EXPECT_EQ(metrics_.connections_destroyed, 1u);
}

TEST_F(NetworkStackTest, ResetCases) {
  // A segment of no connection: RST with its ACK number as sequence.
  EXPECT_TRUE(Send(44000, kAck, 77, 999));
  Out r = ReceiveOne();
  EXPECT_EQ(r.s.flags, kRst);
  EXPECT_EQ(r.s.seq, 999u);
  // Without ACK: RST|ACK acknowledging it all.
  EXPECT_TRUE(Send(44000, kPsh, 77, 0, "abc"));
  r = ReceiveOne();
  EXPECT_EQ(r.s.flags, kRst | kAck);
  EXPECT_EQ(r.s.ack, 80u);
  // A RST of no connection: silence. SYN with FIN: refused.
  EXPECT_TRUE(Send(44000, kRst, 77, 0));
  EXPECT_TRUE(Receive().empty());
  EXPECT_TRUE(Send(44000, kSyn | kFin, 77, 0));
  EXPECT_EQ(ReceiveOne().s.flags, kRst | kAck);
  // Another port: refused from that port.
  EXPECT_TRUE(ns_->Detour(Frame(44000, kSyn, 1, 0, "", 65535, 0, 22)));
  r = ReceiveOne();
  EXPECT_EQ(r.s.src_port, 22);
  EXPECT_EQ(r.s.flags, kRst | kAck);
  EXPECT_EQ(metrics_.rx_accepted_err, 1u);

  // The guest resets: a RST out of the window is ignored, one in it ends it.
  uint32_t theirs = Connect(44001);
  EXPECT_TRUE(Send(44001, kRst, 1001 + 5000, 0));
  EXPECT_EQ(ns_->connection_count(), 1u);
  EXPECT_TRUE(Send(44001, kRst, 1001, 0));
  EXPECT_EQ(ns_->connection_count(), 0u);
  EXPECT_TRUE(Receive().empty());
  // A SYN on an open connection resets it.
  theirs = Connect(44002);
  EXPECT_TRUE(Send(44002, kSyn, 3000, 0));
  r = ReceiveOne();
  EXPECT_EQ(r.s.flags, kRst | kAck);
  EXPECT_EQ(ns_->connection_count(), 0u);
  // An ACK of something never sent during the handshake resets too.
  EXPECT_TRUE(Send(44003, kSyn, 1000, 0));
  Out synack = ReceiveOne();
  EXPECT_TRUE(Send(44003, kAck, 1001, synack.s.seq + 2));
  r = ReceiveOne();
  EXPECT_EQ(r.s.flags, kRst);
  EXPECT_EQ(r.s.seq, synack.s.seq + 2);
  (void)theirs;
}

TEST_F(NetworkStackTest, ChecksumsAreVerified) {
  std::vector<uint8_t> syn = Frame(45000, kSyn, 1000, 0);
  syn[50] ^= 1;  // the TCP checksum
  EXPECT_TRUE(ns_->Detour(syn));  // taken (it is for MMDS), dropped
  EXPECT_TRUE(Receive().empty());
  EXPECT_EQ(metrics_.rx_accepted_err, 1u);
  // Left to the device by the guest (VIRTIO_NET_HDR_F_NEEDS_CSUM): taken.
  EXPECT_TRUE(ns_->Detour(syn, true));
  EXPECT_EQ(ReceiveOne().s.flags, kSyn | kAck);
  std::vector<uint8_t> bad_ip = Frame(45001, kSyn, 1000, 0);
  bad_ip[24] ^= 1;
  EXPECT_TRUE(ns_->Detour(bad_ip, true));
  EXPECT_TRUE(Receive().empty());
  EXPECT_EQ(metrics_.rx_accepted_err, 2u);
}

TEST_F(NetworkStackTest, OptionsFragmentsAndOtherProtocolsAreDropped) {
  std::vector<uint8_t> f = Frame(45002, kSyn, 1000, 0);
  f[20] = 0x20;  // more fragments (the header checksum now fails too: dropped either way)
  EXPECT_TRUE(ns_->Detour(f));
  f = Frame(45002, kSyn, 1000, 0);
  f[23] = 1;  // ICMP
  Store16(&f[24], 0);
  Store16(&f[24], ChecksumFinish(ChecksumAdd(std::span(f).subspan(14, 20))));
  EXPECT_TRUE(ns_->Detour(f));
  EXPECT_TRUE(Receive().empty());
  EXPECT_EQ(metrics_.rx_accepted_err, 1u);
  EXPECT_EQ(metrics_.rx_accepted_unusual, 1u);
  EXPECT_EQ(metrics_.rx_accepted, 2u);
}

TEST_F(NetworkStackTest, OversizedRequestResets) {
  uint32_t theirs = Connect(45003);
  std::string junk(kMaxRequestBytes, 'a');
  EXPECT_TRUE(Send(45003, kAck, 1001, theirs, junk));
  std::vector<Out> out = Receive();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].s.flags, kRst | kAck);
  EXPECT_EQ(ns_->connection_count(), 0u);
  // More than the window: the excess is not taken.
  theirs = Connect(45004);
  EXPECT_TRUE(Send(45004, kAck, 1001, theirs, junk + "b"));
  out = Receive();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].s.flags, kRst | kAck);
  EXPECT_EQ(out[0].s.ack, 1001 + kMaxRequestBytes);
}

TEST_F(NetworkStackTest, AnnouncedBodyIsRefusedAndSkipped) {
  uint32_t theirs = Connect(45005);
  std::string put = "PUT /latest/api/token HTTP/1.1\r\nContent-Length: 9\r\n\r\nsome body" +
                    std::string(kGet);
  EXPECT_TRUE(Send(45005, kAck, 1001, theirs, put.substr(0, 60)));
  EXPECT_TRUE(Send(45005, kAck, 1001 + 60, theirs, put.substr(60)));
  std::string responses = ReadAll(45005, &theirs, 1001 + put.size());
  EXPECT_NE(responses.find("HTTP/1.1 400 \r\n"), std::string::npos);
  EXPECT_NE(responses.find("Invalid request."), std::string::npos);
  EXPECT_EQ(responses.substr(responses.size() - 12), kAmi);
  EXPECT_EQ(responses.find("HTTP/1.1 200", 1), responses.rfind("HTTP/1.1"));
}

TEST_F(NetworkStackTest, V2SessionOverTcp) {
  store_.set_version(Version::kV2);
  uint32_t theirs = Connect(45006);
  uint32_t mine = 1001;
  auto ask = [&](const std::string& req) {
    EXPECT_TRUE(Send(45006, kAck, mine, theirs, req));
    mine += req.size();
    return ReadAll(45006, &theirs, mine);
  };
  std::string r = ask(kGet);
  EXPECT_NE(r.find("401"), std::string::npos);
  r = ask("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n");
  std::string token = Body(r);
  EXPECT_EQ(token.size(), 44u);
  r = ask("GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: " + token + "\r\n\r\n");
  EXPECT_EQ(Body(r), kAmi);
  now_ += 60000;
  r = ask("GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: " + token + "\r\n\r\n");
  EXPECT_EQ(Body(r), "MMDS token not valid.");
}

TEST_F(NetworkStackTest, SmallBuffersAreRefusedAndTheFrameKept) {
  EXPECT_TRUE(Send(45007, kSyn, 1000, 0));
  std::vector<uint8_t> tiny(kTcpFrameOverhead);
  EXPECT_EQ(ns_->WriteNextFrame(tiny), 0u);
  EXPECT_EQ(metrics_.tx_errors, 1u);
  EXPECT_EQ(ReceiveOne().s.flags, kSyn | kAck);
  // Data segments shrink to the buffer offered.
  uint32_t theirs = Connect(45008);
  EXPECT_TRUE(Send(45008, kAck, 1001, theirs, kGet));
  std::vector<Out> out = Receive(kTcpFrameOverhead + 10);
  ASSERT_GT(out.size(), 5u);
  EXPECT_EQ(out[0].payload.size(), 10u);
}

TEST_F(NetworkStackTest, FloodsStayBounded) {
  // Many SYNs and stray segments, never read: bounded state and frames.
  for (uint32_t i = 0; i < 5000; i++) {
    Send(static_cast<uint16_t>(10000 + i), i % 3 ? kSyn : kAck, i, i);
  }
  EXPECT_LE(ns_->connection_count(), kMaxConnections);
  std::vector<Out> out = Receive();
  EXPECT_LE(out.size(), kMaxConnections + kMaxPendingResets);
}

}  // namespace
}  // namespace ember::mmds
