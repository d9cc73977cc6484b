#include "src/mmds/packets.h"

#include <algorithm>
#include <cstring>

namespace ember::mmds {
namespace {

constexpr uint8_t kOptionEnd = 0, kOptionNop = 1, kOptionMss = 2;
constexpr uint16_t kMssMin = 100;
constexpr uint16_t kMssMax = 65535 - kIpv4HeaderLen - kTcpHeaderLen;
constexpr uint8_t kTtl = 64;

void WriteEth(uint8_t* p, const MacAddr& dst, const MacAddr& src, uint16_t type) {
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  Store16(p + 12, type);
}

}  // namespace

uint32_t ChecksumAdd(std::span<const uint8_t> b, uint32_t sum) {
  size_t i = 0;
  for (; i + 1 < b.size(); i += 2) sum += Load16(&b[i]);
  if (i < b.size()) sum += uint32_t{b[i]} << 8;
  // Fold now and then so that a 64 KiB packet cannot overflow the sum.
  return (sum & 0xffff) + (sum >> 16);
}

uint16_t ChecksumFinish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint32_t PseudoHeaderSum(uint32_t src_ip, uint32_t dst_ip, uint16_t tcp_len) {
  return (src_ip >> 16) + (src_ip & 0xffff) + (dst_ip >> 16) + (dst_ip & 0xffff) + kProtocolTcp +
         tcp_len;
}

std::optional<ArpRequest> ParseArpRequest(std::span<const uint8_t> f) {
  // Trailing padding (a frame made up to 60 bytes) is allowed.
  if (f.size() < kArpFrameLen || Load16(&f[12]) != kEtherTypeArp) return std::nullopt;
  const uint8_t* a = &f[kEthHeaderLen];
  // htype Ethernet, ptype IPv4, hlen 6, plen 4, operation request.
  if (Load16(a) != 1 || Load16(a + 2) != kEtherTypeIpv4 || a[4] != 6 || a[5] != 4 ||
      Load16(a + 6) != 1) {
    return std::nullopt;
  }
  ArpRequest r;
  std::memcpy(r.sender_mac.data(), a + 8, 6);
  r.sender_ip = Load32(a + 14);
  r.target_ip = Load32(a + 24);
  return r;
}

std::optional<uint32_t> PeekIpv4Destination(std::span<const uint8_t> f) {
  if (f.size() < kEthHeaderLen + kIpv4HeaderLen || Load16(&f[12]) != kEtherTypeIpv4) {
    return std::nullopt;
  }
  return Load32(&f[kEthHeaderLen + 16]);
}

Ipv4Result ParseIpv4Tcp(std::span<const uint8_t> f, bool tcp_checksum_partial, TcpSegment* out) {
  if (f.size() < kEthHeaderLen + kIpv4HeaderLen) return Ipv4Result::kMalformed;
  std::span<const uint8_t> ip = f.subspan(kEthHeaderLen);
  if (ip[0] >> 4 != 4) return Ipv4Result::kMalformed;
  size_t header_len = size_t{ip[0] & 0x0fu} * 4;
  size_t total_len = Load16(&ip[2]);
  // Ethernet padding may follow the packet; a packet longer than the frame may not.
  if (header_len < kIpv4HeaderLen || total_len < header_len || total_len > ip.size()) {
    return Ipv4Result::kMalformed;
  }
  if (ChecksumFinish(ChecksumAdd(ip.first(header_len))) != 0) return Ipv4Result::kMalformed;
  if (header_len != kIpv4HeaderLen) return Ipv4Result::kRefused;
  uint16_t frag = Load16(&ip[6]);
  if ((frag & 0x2000) || (frag & 0x1fff)) return Ipv4Result::kRefused;  // MF, or an offset
  if (ip[9] != kProtocolTcp) return Ipv4Result::kNotTcp;

  std::span<const uint8_t> tcp = ip.subspan(header_len, total_len - header_len);
  if (tcp.size() < kTcpHeaderLen) return Ipv4Result::kMalformed;
  size_t data_offset = static_cast<size_t>(tcp[12] >> 4) * 4;
  if (data_offset < kTcpHeaderLen || data_offset > tcp.size()) return Ipv4Result::kMalformed;
  out->src_ip = Load32(&ip[12]);
  out->dst_ip = Load32(&ip[16]);
  uint32_t pseudo = PseudoHeaderSum(out->src_ip, out->dst_ip, static_cast<uint16_t>(tcp.size()));
  if (!tcp_checksum_partial && ChecksumFinish(ChecksumAdd(tcp, pseudo)) != 0) {
    return Ipv4Result::kMalformed;
  }
  std::memcpy(out->src_mac.data(), &f[6], 6);
  out->src_port = Load16(&tcp[0]);
  out->dst_port = Load16(&tcp[2]);
  out->seq = Load32(&tcp[4]);
  out->ack = Load32(&tcp[8]);
  out->flags = tcp[13] & 0x3f;
  out->window = Load16(&tcp[14]);
  out->options = tcp.subspan(kTcpHeaderLen, data_offset - kTcpHeaderLen);
  out->payload = tcp.subspan(data_offset);
  return Ipv4Result::kTcp;
}

std::optional<uint16_t> ParseMssOption(std::span<const uint8_t> o) {
  size_t i = 0;
  while (i < o.size()) {
    if (o[i] == kOptionEnd) break;
    if (o[i] == kOptionNop) {
      i++;
      continue;
    }
    if (i + 1 >= o.size() || o[i + 1] < 2 || i + o[i + 1] > o.size()) return 0;
    if (o[i] == kOptionMss) {
      if (o[i + 1] != 4) return 0;
      uint16_t mss = Load16(&o[i + 2]);
      return mss >= kMssMin && mss <= kMssMax ? mss : 0;
    }
    i += o[i + 1];
  }
  return std::nullopt;
}

size_t WriteArpReply(std::span<uint8_t> buf, const MacAddr& our_mac, uint32_t our_ip,
                     const MacAddr& to_mac, uint32_t to_ip) {
  if (buf.size() < kArpFrameLen) return 0;
  uint8_t* p = buf.data();
  WriteEth(p, to_mac, our_mac, kEtherTypeArp);
  uint8_t* a = p + kEthHeaderLen;
  Store16(a, 1);
  Store16(a + 2, kEtherTypeIpv4);
  a[4] = 6, a[5] = 4;
  Store16(a + 6, 2);  // reply
  std::memcpy(a + 8, our_mac.data(), 6);
  Store32(a + 14, our_ip);
  std::memcpy(a + 18, to_mac.data(), 6);
  Store32(a + 24, to_ip);
  return kArpFrameLen;
}

size_t WriteTcpFrame(std::span<uint8_t> buf, const MacAddr& src_mac, const MacAddr& dst_mac,
                     const TcpHeader& h, std::span<const uint8_t> payload) {
  size_t options = h.mss_option ? 4 : 0;
  size_t tcp_len = kTcpHeaderLen + options + payload.size();
  size_t total = kEthHeaderLen + kIpv4HeaderLen + tcp_len;
  if (buf.size() < total || kIpv4HeaderLen + tcp_len > 0xffff) return 0;
  uint8_t* p = buf.data();
  WriteEth(p, dst_mac, src_mac, kEtherTypeIpv4);

  uint8_t* ip = p + kEthHeaderLen;
  std::memset(ip, 0, kIpv4HeaderLen);
  ip[0] = 0x45;
  Store16(ip + 2, static_cast<uint16_t>(kIpv4HeaderLen + tcp_len));
  Store16(ip + 6, 0x4000);  // don't fragment
  ip[8] = kTtl;
  ip[9] = kProtocolTcp;
  Store32(ip + 12, h.src_ip);
  Store32(ip + 16, h.dst_ip);
  Store16(ip + 10, ChecksumFinish(ChecksumAdd(std::span<const uint8_t>(ip, kIpv4HeaderLen))));

  uint8_t* tcp = ip + kIpv4HeaderLen;
  Store16(tcp, h.src_port);
  Store16(tcp + 2, h.dst_port);
  Store32(tcp + 4, h.seq);
  Store32(tcp + 8, h.ack);
  tcp[12] = static_cast<uint8_t>((kTcpHeaderLen + options) / 4 << 4);
  tcp[13] = h.flags;
  Store16(tcp + 14, h.window);
  Store32(tcp + 16, 0);  // checksum, urgent pointer
  if (h.mss_option) {
    tcp[20] = kOptionMss, tcp[21] = 4;
    Store16(tcp + 22, h.mss_option);
  }
  if (!payload.empty()) std::memcpy(tcp + kTcpHeaderLen + options, payload.data(), payload.size());
  uint32_t sum = PseudoHeaderSum(h.src_ip, h.dst_ip, static_cast<uint16_t>(tcp_len));
  Store16(tcp + 16, ChecksumFinish(ChecksumAdd(std::span<const uint8_t>(tcp, tcp_len), sum)));
  return total;
}

}  // namespace ember::mmds
