// MMDS's side of one guest network interface (Firecracker's mmds/ns.rs and
// dumbo's TCP handler): the frames the guest sends to the MMDS address are
// answered here and never reach the TAP.
//
// Wiring (virtio-net, on the VMM thread):
//  - transmit: every frame the guest sends (without its virtio_net_hdr)
//    goes to Detour first; true means MMDS took it (counted in
//    rx_accepted) and it must not be written to the TAP. Pass
//    tcp_checksum_partial when the header has VIRTIO_NET_HDR_F_NEEDS_CSUM:
//    the guest left the TCP checksum to the device, so it is not checked.
//  - receive: while HasFrames(), WriteNextFrame into the guest's buffer
//    (before frames from the TAP); it returns the frame's length, 0 when
//    nothing fits. MMDS counts tx_frames and tx_bytes itself.
//  - timers: NextDeadline() says when a retransmission or probe falls
//    due; HasFrames() turns true then.
// Taken: ARP requests for the MMDS address, and every IPv4 packet to it
// (TCP to port 80 is served, TCP to other ports is answered with a RST,
// other protocols, options and fragments are dropped and counted).
// Anything else returns false. Memory is bounded: kMaxConnections
// connections of fixed buffers, at most kMaxPendingResets RSTs and one ARP
// reply waiting; a frame is built only when asked for. No threads, files
// or system calls: only the clock.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "src/mmds/clock.h"
#include "src/mmds/data_store.h"
#include "src/mmds/metrics.h"
#include "src/mmds/packets.h"
#include "src/mmds/tcp_connection.h"

namespace ember::mmds {

// Firecracker's DEFAULT_MAX_CONNECTIONS and DEFAULT_MAX_PENDING_RESETS (mmds/ns.rs).
inline constexpr size_t kMaxConnections = 30;
inline constexpr size_t kMaxPendingResets = 100;
inline constexpr uint32_t kDefaultIpv4 = 0xa9fea9fe;  // 169.254.169.254
// Firecracker's DEFAULT_MAC_ADDR: the MAC the MMDS address answers with.
inline constexpr MacAddr kDefaultMac = {0x06, 0x01, 0x23, 0x45, 0x67, 0x01};
inline constexpr uint16_t kHttpPort = 80;

struct NetworkStackConfig {
  uint32_t ipv4 = kDefaultIpv4;  // host order
  MacAddr mac = kDefaultMac;
  // Seeds the initial sequence numbers; drawn from getrandom(2) when unset.
  std::optional<uint64_t> isn_seed;
};

class NetworkStack {
 public:
  // `store` and `metrics` must outlive the stack; several stacks (one per
  // interface) may share them.
  NetworkStack(const NetworkStackConfig& config, DataStore* store, MmdsMetrics* metrics,
               Clock clock = MonotonicClock());
  ~NetworkStack();
  NetworkStack(const NetworkStack&) = delete;  // its request handler points at it
  NetworkStack& operator=(const NetworkStack&) = delete;

  // True when the frame was for MMDS and has been taken.
  bool Detour(std::span<const uint8_t> frame, bool tcp_checksum_partial = false);
  bool HasFrames() const;
  // Writes the next frame for the guest into `buf`; its length, or 0.
  size_t WriteNextFrame(std::span<uint8_t> buf);
  std::optional<uint64_t> NextDeadline() const;

  const NetworkStackConfig& config() const { return config_; }
  size_t connection_count() const;

 private:
  struct Slot;
  void DetourTcp(const TcpSegment& s);
  void QueueRst(uint32_t ip, uint16_t port, uint16_t local_port, const OutSegment& rst);
  void Drop(size_t index);
  void CountTx(size_t bytes);
  uint32_t NextIsn();
  size_t WriteSegment(std::span<uint8_t> buf, uint32_t ip, uint16_t port, uint16_t local_port,
                      const OutSegment& o);

  NetworkStackConfig config_;
  DataStore* store_;
  MmdsMetrics* metrics_;
  Clock clock_;
  RequestHandler handler_;
  // The guest's MAC, from its last frame: where replies go.
  MacAddr guest_mac_{};
  std::optional<uint32_t> arp_reply_to_;
  struct PendingRst {
    uint32_t ip;
    uint16_t port, local_port;
    OutSegment rst;
  };
  std::vector<PendingRst> rsts_;
  std::vector<std::unique_ptr<Slot>> slots_;  // kMaxConnections, empty ones null
  size_t next_slot_ = 0;                      // where the round robin resumes
  uint64_t isn_state_;
};

}  // namespace ember::mmds
