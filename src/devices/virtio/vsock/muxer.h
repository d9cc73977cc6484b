// The host side of the vsock device (Firecracker's "muxer"): the Unix
// socket host programs connect to, one Unix socket per vsock stream, and
// the packets between them and the guest. It knows nothing of queues: the
// device hands it the guest's packets and asks it for the next packet
// for the guest, with a buffer to read data into.
//
// All its fds sit in one inner epoll, the device's backend fd. Memory and
// work stay bounded whatever the guest does: at most max_connections
// streams, each holding at most buf_alloc guest bytes the host has not
// read; at most max_queued_rst resets waiting for receive buffers (more
// are dropped and counted); and a host socket is not polled for input
// while its bytes wait for the guest (for buffers or for credit), so a
// guest that never reads makes nothing spin.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/vsock/connection.h"
#include "src/devices/virtio/vsock/host_socket.h"
#include "src/devices/virtio/vsock/packet.h"

namespace ember::virtio::vsock {

// Bounds and timeouts; tests make them small.
struct VsockLimits {
  size_t max_connections = 1024;  // host sockets of every state
  // Our receive buffer per stream (Firecracker's CONN_TX_BUF_SIZE): with
  // max_connections, at most 64 MiB of guest data held for slow hosts.
  uint32_t buf_alloc = 64 * 1024;
  size_t max_queued_rst = 256;  // Firecracker's MUXER_RXQ_SIZE
  // Firecracker: CONN_REQUEST_TIMEOUT_MS, CONN_SHUTDOWN_TIMEOUT_MS.
  int64_t request_timeout_ms = 2000;
  int64_t shutdown_timeout_ms = 2000;
  // A host program has this long to send its CONNECT line.
  int64_t connect_line_timeout_ms = 10000;
};

// Firecracker's vsock metric names where one applies: rx is towards the
// guest, tx from it.
struct VsockCounters {
  uint64_t rx_bytes_count = 0, tx_bytes_count = 0;
  uint64_t rx_packets_count = 0, tx_packets_count = 0;
  uint64_t conns_added = 0, conns_killed = 0, conns_removed = 0;
  uint64_t rx_read_fails = 0, tx_write_fails = 0, tx_flush_fails = 0;
  uint64_t ev_queue_event_fails = 0;  // event buffers unusable
  // Ember's own.
  uint64_t conns_refused = 0;      // over max_connections
  uint64_t bad_packets = 0;        // malformed or misaddressed guest packets
  uint64_t credit_violations = 0;  // guests that sent beyond our buf_alloc
  uint64_t rst_sent = 0;
  uint64_t rst_dropped = 0;        // resets that found the queue full
  uint64_t bad_rx_buffers = 0;     // receive chains returned unused
  uint64_t transport_resets = 0;   // TRANSPORT_RESET events sent
};

class Muxer {
 public:
  static absl::StatusOr<std::unique_ptr<Muxer>> Create(const VsockConfig& config,
                                                       const VsockLimits& limits,
                                                       VsockCounters* counters);
  // Closes every socket and removes uds_path if it still is ours.
  ~Muxer();

  int epoll_fd() const { return epoll_.get(); }

  // Takes host connections from now on (the device was activated); until
  // then they wait in the listen backlog.
  void Start();
  // Drops every stream and pending packet, without a word to the guest
  // (the device was reset).
  void Stop();
  // Start and Stop run on a vCPU thread (a register write), whose seccomp
  // filter allows no work on fds: they only set flags and fire the timer,
  // and the VMM thread does the rest here, before anything else it does.
  void Settle();

  // A guest packet whose payload is its `len` bytes.
  void FromGuest(const TxPacket& packet);
  // A guest packet whose length was wrong: reset (and its stream dropped).
  void RejectFromGuest(const PacketHeader& header);

  bool HasRx() const { return !resets_.empty() || !ready_.empty(); }
  // The next packet for the guest, its payload (header.len bytes) already
  // read into `buffer`; nullopt when nothing fits this buffer now.
  std::optional<PacketHeader> NextRx(const RxBuffer& buffer);

  // The inner epoll is ready: serve what is ready, at most kMaxEvents fds.
  void Poll();
  // Ready while the device cannot run: new host connections are closed
  // and streams dropped, so nothing stays ready.
  void Drain();

  uint32_t local_port_last() const { return local_port_last_; }
  void set_local_port_last(uint32_t port) { local_port_last_ = port; }
  size_t connections() const { return conns_.size(); }

 private:
  static constexpr int kMaxEvents = 32;
  static constexpr uint64_t kListenerToken = 1;
  static constexpr uint64_t kTimerToken = 2;
  static constexpr uint64_t kFirstConnToken = 16;

  Muxer(VsockConfig config, VsockLimits limits, VsockCounters* counters, UnixListener listener,
        UniqueFd epoll, UniqueFd timer);

  void DropAll();
  void SetListenerRegistered(bool on);

  // Host side.
  void Accept(bool serve);
  void OnEvent(Connection& c, uint32_t events);
  void ReadConnectLine(Connection& c);
  void Flush(Connection& c);
  // After guest bytes reached the host: half-close, credit, interest.
  // False when that ended the stream.
  bool AfterForward(Connection& c);
  // The host program closed its end: tell the guest. False when that
  // ended the stream.
  bool HostGone(Connection& c);
  void OnTimer();
  // Epoll interest from the stream's state (see muxer.cc).
  void UpdateInterest(Connection& c);
  void SetDeadline(Connection& c, int64_t ms_from_now);
  // Poll (serve) and Drain (drop) share one pass over the inner epoll.
  void Dispatch(bool serve);
  void ArmTimer(int64_t at_ms);
  void WakeSoon();  // the timer fires at once: the VMM thread calls Settle

  // Guest side.
  void ConnectToHost(const PacketHeader& h);
  void Established(Connection& c);
  void ToHost(Connection& c, const TxPacket& p);
  void OnShutdown(Connection& c, uint32_t flags);
  // Fills in a packet `c` owes the guest; false when it has none for
  // `buffer` (and it may be gone: a read error ends it).
  bool Produce(Connection& c, const RxBuffer& buffer, PacketHeader* h);
  bool ReadData(Connection& c, const RxBuffer& buffer, PacketHeader* h);
  PacketHeader HeaderFor(Connection& c, uint16_t op);

  Connection* Find(uint64_t token);
  Connection* FindByKey(uint64_t key);
  Connection& Add(UniqueFd fd, ConnState state);
  void SetPorts(Connection& c, uint32_t local_port, uint32_t peer_port);
  // Ends a stream: with an RST to the guest, or quietly (the guest ended it).
  void Remove(Connection& c, bool rst, bool killed);
  void Kill(Connection& c) { Remove(c, true, true); }
  void Queue(Connection& c);
  // An RST answering `h`, from the address it was sent to.
  void ResetReply(const PacketHeader& h);
  void QueueReset(uint64_t src_cid, uint32_t src_port, uint32_t dst_port);
  uint32_t AllocatePort();

  const VsockConfig config_;
  const VsockLimits limits_;
  VsockCounters* counters_;
  UnixListener listener_;
  UniqueFd epoll_;
  UniqueFd timer_;
  bool listening_ = false;  // between Start and Stop
  bool stop_owed_ = false;  // Stop's work, for Settle
  bool listener_registered_ = false;
  int64_t listener_paused_until_ms_ = 0;  // accept failed (EMFILE): retry then
  int64_t armed_ms_ = 0;                  // the timer's expiry; 0: disarmed

  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;  // by token
  std::unordered_map<uint64_t, uint64_t> by_key_;  // (local, peer) port pair -> token
  std::unordered_map<uint32_t, uint32_t> local_ports_;  // port -> streams using it
  uint64_t next_token_ = kFirstConnToken;
  uint32_t local_port_last_ = (1u << 30) - 1;
  std::deque<uint64_t> ready_;  // tokens of streams with packets owed
  struct Reset {
    uint64_t src_cid;
    uint32_t src_port, dst_port;
  };
  std::deque<Reset> resets_;  // resets of no stream (or a stream gone)
};

}  // namespace ember::virtio::vsock
