// Ethernet, ARP, IPv4 and TCP as MMDS reads and writes them: checked views
// of the guest's frames and writers for the frames MMDS answers with. All
// reads are bounds-checked against the frame; nothing is trusted.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>

namespace ember::mmds {

using MacAddr = std::array<uint8_t, 6>;

inline constexpr size_t kEthHeaderLen = 14;
inline constexpr size_t kArpFrameLen = kEthHeaderLen + 28;
inline constexpr size_t kIpv4HeaderLen = 20;
inline constexpr size_t kTcpHeaderLen = 20;
// Ethernet + IPv4 + TCP without options.
inline constexpr size_t kTcpFrameOverhead = kEthHeaderLen + kIpv4HeaderLen + kTcpHeaderLen;
inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint8_t kProtocolTcp = 6;

// TCP flags.
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;

inline uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t Load32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline void Store16(uint8_t* p, uint16_t v) { p[0] = v >> 8, p[1] = v & 0xff; }
inline void Store32(uint8_t* p, uint32_t v) {
  p[0] = v >> 24, p[1] = (v >> 16) & 0xff, p[2] = (v >> 8) & 0xff, p[3] = v & 0xff;
}

// RFC 1071: the ones' complement sum of `bytes` added to `sum`, unfolded.
uint32_t ChecksumAdd(std::span<const uint8_t> bytes, uint32_t sum = 0);
// Folds and complements: the value for a checksum field, or 0 when
// verifying data whose checksum field is included.
uint16_t ChecksumFinish(uint32_t sum);
// The TCP pseudo-header's sum for a segment of `tcp_len` bytes.
uint32_t PseudoHeaderSum(uint32_t src_ip, uint32_t dst_ip, uint16_t tcp_len);

// The ARP request a guest sends to find `ip`'s MAC.
struct ArpRequest {
  MacAddr sender_mac;
  uint32_t sender_ip;
  uint32_t target_ip;
};
// Ethernet/IPv4 ARP requests only; nullopt for anything else.
std::optional<ArpRequest> ParseArpRequest(std::span<const uint8_t> frame);

// The destination of an IPv4 frame, read without checking the rest;
// nullopt if the frame is not IPv4 or too short to say.
std::optional<uint32_t> PeekIpv4Destination(std::span<const uint8_t> frame);

struct TcpSegment {
  MacAddr src_mac;
  uint32_t src_ip, dst_ip;
  uint16_t src_port, dst_port;
  uint32_t seq, ack;
  uint8_t flags;
  uint16_t window;
  std::span<const uint8_t> options;
  std::span<const uint8_t> payload;
};

enum class Ipv4Result {
  kTcp,          // `out` is filled
  kNotTcp,       // a sound IPv4 packet of another protocol
  kMalformed,    // bad version, lengths, checksum, or TCP header
  kRefused,      // IPv4 options or a fragment: MMDS takes neither
};
// Checks an IPv4 frame: the header checksum always, the TCP checksum
// unless the guest left it to the device (`tcp_checksum_partial`).
Ipv4Result ParseIpv4Tcp(std::span<const uint8_t> frame, bool tcp_checksum_partial,
                        TcpSegment* out);

// The MSS option of a SYN: nullopt when absent, 0 when malformed or
// outside Firecracker's bounds (100 to 65495).
std::optional<uint16_t> ParseMssOption(std::span<const uint8_t> options);

size_t WriteArpReply(std::span<uint8_t> buf, const MacAddr& our_mac, uint32_t our_ip,
                     const MacAddr& to_mac, uint32_t to_ip);

struct TcpHeader {
  uint32_t src_ip, dst_ip;
  uint16_t src_port, dst_port;
  uint32_t seq, ack;
  uint8_t flags;
  uint16_t window;
  uint16_t mss_option = 0;  // written on a SYN-ACK when not 0
};
// A whole Ethernet/IPv4/TCP frame with both checksums; 0 if `buf` is short.
size_t WriteTcpFrame(std::span<uint8_t> buf, const MacAddr& src_mac, const MacAddr& dst_mac,
                     const TcpHeader& h, std::span<const uint8_t> payload);

}  // namespace ember::mmds
