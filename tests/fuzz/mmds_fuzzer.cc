// libFuzzer target: MMDS's network stack fed the frames a guest can send
// (src/mmds/network_stack.h). The input is a little program: raw frames;
// from four ports, handshakes, data in sequence (HTTP pieces, tokens it
// was given, junk) and ACKs with any window, or segments with any flags
// and numbers near or anywhere, all with sound checksums, or with a byte
// changed; ARP requests; the clock stepped by milliseconds or minutes; the
// guest reading frames into buffers of any size; and the host replacing or
// patching the data store and switching V1/V2 and imds_compat.
//
// Checked beyond ASan and UBSan: no more than 30 connections; every frame
// MMDS writes fits the buffer, comes from its MAC and address and has
// sound checksums; at a fixed time the frames waiting are finite (a guest
// that reads forever without sending empties the queue); Detour takes a
// frame exactly when it is an ARP request for the MMDS address or IPv4 to it.
#include <string>
#include <vector>

#include "src/mmds/network_stack.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;
using namespace ember::mmds;

namespace {

constexpr uint32_t kGuestIp = 0x0a000002;
const MacAddr kGuestMac = {2, 0, 0, 0, 0, 1};
constexpr uint16_t kPorts[] = {40000, 40001, 40002, 40003};
// At one instant: RSTs, an ARP reply, and per connection at most a window
// (64 KiB) of segments of at least 100 bytes, plus control segments.
constexpr size_t kMaxFramesAtOnce = kMaxPendingResets + 1 + kMaxConnections * (65536 / 100 + 8);

const char* const kPieces[] = {
    "GET / HTTP/1.1\r\n\r\n",
    "GET /latest/meta-data/ami-id HTTP/1.1\r\nAccept: application/json\r\n\r\n",
    "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
    "GET /latest HTTP/1.0\r\nX-metadata-token: ",
    "PUT /latest/api/token HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
    "PATCH / HTTP/1.1\r\n\r\n", "POST / HTTP/1.1\r\n\r\n", "\r\n\r\n", "\r\n", "\n\n",
    "X-Forwarded-For: 1.2.3.4\r\n", "Accept-Encoding: identity;q=0\r\n", "GET //a//b HTTP/1.1",
};

// What the guest knows of each of its connections.
struct GuestConn {
  uint32_t next_seq = 1000;  // ours
  uint32_t their_seq = 0;    // the next byte MMDS sends
};

struct Harness {
  uint64_t now = 1000000;
  DataStore store{kDefaultSizeLimit, TokenAuthority({1, 2, 3, 4, 5, 6, 7}, [this] { return now; })};
  MmdsMetrics metrics;
  NetworkStack ns{NetworkStackConfig{kDefaultIpv4, kDefaultMac, 1}, &store, &metrics,
                  [this] { return now; }};
  GuestConn conns[4];
  std::string token;

  void Detour(std::span<const uint8_t> frame, bool partial) {
    bool expected = false;
    if (std::optional<ArpRequest> arp = ParseArpRequest(frame)) {
      expected = arp->target_ip == kDefaultIpv4;
    } else if (frame.size() >= kEthHeaderLen && Load16(&frame[12]) == kEtherTypeArp) {
      expected = false;
    } else if (std::optional<uint32_t> dst = PeekIpv4Destination(frame)) {
      expected = *dst == kDefaultIpv4;
    }
    if (ns.Detour(frame, partial) != expected) Fail("Detour took the wrong frame");
    if (ns.connection_count() > kMaxConnections) Fail("more connections than the cap");
  }

  // Reads frames as the guest would, learning MMDS's sequence numbers.
  void Read(size_t buf_size, size_t max_frames) {
    std::vector<uint8_t> buf(buf_size);
    for (size_t i = 0; i < max_frames; i++) {
      bool has = ns.HasFrames();
      size_t n = ns.WriteNextFrame(buf);
      if (n == 0) return;
      if (!has) Fail("a frame came while HasFrames was false");
      if (n > buf.size()) Fail("frame larger than the buffer");
      std::span<const uint8_t> f(buf.data(), n);
      if (!std::equal(kDefaultMac.begin(), kDefaultMac.end(), f.begin() + 6)) {
        Fail("frame not from the MMDS MAC");
      }
      if (Load16(&f[12]) == kEtherTypeArp) continue;
      TcpSegment s;
      if (ParseIpv4Tcp(f, false, &s) != Ipv4Result::kTcp) Fail("a frame MMDS wrote is unsound");
      if (s.src_ip != kDefaultIpv4 || s.dst_ip != kGuestIp) Fail("wrong addresses");
      for (size_t c = 0; c < 4; c++) {
        if (s.dst_port != kPorts[c]) continue;
        if (s.flags & kSyn) conns[c].their_seq = s.seq + 1;
        uint32_t end = s.seq + static_cast<uint32_t>(s.payload.size()) + ((s.flags & kFin) ? 1 : 0);
        if (s.seq == conns[c].their_seq) conns[c].their_seq = end;
        if (s.payload.size() > 40 && token.empty()) {
          std::string p(s.payload.begin(), s.payload.end());
          size_t at = p.find("\r\n\r\n");
          if (at != std::string::npos && p.size() - at - 4 == 44) token = p.substr(at + 4);
        }
      }
    }
  }

  // A sound segment from connection `c`, with `payload`; updates what the
  // guest sent.
  void Segment(FuzzInput& in, size_t c, uint8_t flags, uint32_t seq, uint32_t ack,
               uint16_t window, uint16_t mss, uint16_t port, const std::string& payload) {
    std::vector<uint8_t> frame(70000);
    TcpHeader th{kGuestIp, kDefaultIpv4, kPorts[c], port, seq, ack, flags, window, mss};
    size_t n = WriteTcpFrame(frame, kGuestMac, kDefaultMac, th,
                             {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
    frame.resize(n);
    Detour(frame, in.Bool());
    GuestConn& gc = conns[c];
    if (flags & kSyn) {
      gc.next_seq = seq + 1;
    } else if (seq == gc.next_seq) {
      gc.next_seq += static_cast<uint32_t>(payload.size()) + ((flags & kFin) ? 1 : 0);
    }
  }

  std::string Payload(FuzzInput& in) {
    std::string payload;
    uint8_t pieces = in.U8() % 4;
    for (uint8_t i = 0; i < pieces; i++) {
      uint8_t p = in.U8();
      if (p < 200) {
        payload += kPieces[p % (sizeof(kPieces) / sizeof(kPieces[0]))];
      } else if (p < 220) {
        payload += token + "\r\n\r\n";
      } else {
        std::span<const uint8_t> junk = in.Bytes(in.U16() % 3000);
        payload.append(junk.begin(), junk.end());
      }
    }
    return payload;
  }

  uint16_t Window(FuzzInput& in) {
    uint8_t w = in.U8();
    return w < 128 ? 65535 : w < 160 ? 0 : w < 200 ? w : in.U16();
  }

  // Empties the queue at a fixed time: it must end.
  void ReadAll() {
    Read(65600, kMaxFramesAtOnce);
    if (ns.HasFrames()) Fail("frames without end at a fixed time");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness h;
  if (!h.store.Put(R"({"latest":{"meta-data":{"ami-id":"ami-1","list":[1,"a"]},"x":"y"}})").ok()) {
    Fail("seed document refused");
  }
  FuzzInput in(data, size);
  int ops = 0;
  while (!in.empty() && ops++ < 400) {
    uint8_t op = in.U8();
    size_t c = (op >> 4) % 4;
    GuestConn& gc = h.conns[c];
    switch (op % 11) {
      case 0: {  // a raw frame, any bytes
        uint16_t len = in.U16() % 1600;
        std::span<const uint8_t> b = in.Bytes(len);
        h.Detour(b, in.Bool());
        break;
      }
      case 1: {  // a handshake: SYN, the SYN-ACK read, ACK
        gc = GuestConn{};
        gc.next_seq = in.U32();
        uint16_t mss = in.Bool() ? in.U16() : 0;
        h.Segment(in, c, kSyn, gc.next_seq, 0, 65535, mss, kHttpPort, "");
        h.Read(1514, 4);
        h.Segment(in, c, kAck, gc.next_seq, gc.their_seq, h.Window(in), 0, kHttpPort, "");
        break;
      }
      case 2: {  // data in sequence: HTTP pieces or junk, maybe with FIN
        uint8_t flags = kAck | (in.Bool() ? kPsh : 0) | (in.U8() < 16 ? kFin : 0);
        h.Segment(in, c, flags, gc.next_seq, gc.their_seq, h.Window(in), 0, kHttpPort,
                  h.Payload(in));
        break;
      }
      case 3: {  // everything read so far acked, with some window
        h.Segment(in, c, kAck, gc.next_seq, gc.their_seq, h.Window(in), 0, kHttpPort, "");
        break;
      }
      case 4: {  // any segment: flags, numbers near or anywhere, other ports
        uint8_t flags = in.U8();
        uint32_t seq = gc.next_seq, ack = gc.their_seq;
        uint8_t how = in.U8();
        if (how & 1) seq += static_cast<int8_t>(in.U8());
        if (how & 2) ack += static_cast<int8_t>(in.U8());
        if (how & 4) seq = in.U32();
        if (how & 8) ack = in.U32();
        uint16_t port = (how & 16) ? in.U16() : kHttpPort;
        uint16_t mss = (how & 32) ? in.U16() : 0;
        h.Segment(in, c, flags, seq, ack, h.Window(in), mss, port, h.Payload(in));
        if (flags & kRst) gc = GuestConn{};
        break;
      }
      case 5: {  // a sound frame with one byte changed
        std::vector<uint8_t> frame(2000);
        TcpHeader th{kGuestIp, kDefaultIpv4, kPorts[c], kHttpPort, gc.next_seq, gc.their_seq,
                     static_cast<uint8_t>(in.U8() | kAck), 65535, 0};
        std::string payload = h.Payload(in).substr(0, 1000);
        std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(payload.data()),
                                       payload.size());
        size_t n = WriteTcpFrame(frame, kGuestMac, kDefaultMac, th, bytes);
        frame.resize(n);
        frame[in.U16() % n] ^= static_cast<uint8_t>(in.U8() | 1);
        h.Detour(frame, in.Bool());
        break;
      }
      case 6: {  // an ARP request, for MMDS or not
        std::vector<uint8_t> arp = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1,
                                    0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1,
                                    10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 169, 254, 169, 254};
        if (in.Bool()) arp[in.U8() % arp.size()] = in.U8();
        h.Detour(arp, false);
        break;
      }
      case 7:  // time passes
        h.now += in.Bool() ? in.U16() : uint64_t{in.U16()} * 1000;
        break;
      case 8:  // the guest reads a few frames into a buffer of some size
        h.Read(in.U16() % 3000, in.U8() % 64);
        break;
      case 9:
        h.ReadAll();
        break;
      case 10: {  // the host changes the store or the version
        uint8_t v = in.U8();
        if (v & 1) {
          h.store.set_version(v & 2 ? Version::kV2 : Version::kV1);
          h.store.set_imds_compat(v & 4);
        } else if (v & 2) {
          (void)h.store.Put("{\"big\":\"" + std::string(40000 + v * 40, 'x') + "\"}");
        } else {
          std::span<const uint8_t> b = in.Bytes(in.U16() % 256);
          std::string json(b.begin(), b.end());
          std::string before = h.store.Get();
          absl::Status st = v & 4 ? h.store.Put(json) : h.store.Patch(json);
          if (!st.ok() && h.store.Get() != before) Fail("a refused write changed the store");
          if (h.store.Get().size() > kDefaultSizeLimit) Fail("store over its limit");
        }
        break;
      }
    }
  }
  h.ReadAll();
  // Long after, the guest silent: every timer fires until its connection
  // gives up (at most kMaxRetransmissions times); nothing is left armed.
  for (int i = 0; i <= kMaxRetransmissions + 1 && h.ns.NextDeadline(); i++) {
    h.now += 600000;
    h.ReadAll();
  }
  if (h.ns.NextDeadline()) Fail("a timer that never ends");
  return 0;
}
