// libFuzzer target: virtio-vsock behind its transport (transport_harness.h)
// with both of its sides driven by the fuzzer: the guest's packets (mostly
// well-formed headers with the fuzzer's CIDs, ports, ops, flags, credit
// and lengths, cut into descriptors anywhere), receive and event buffers
// on the rings the registers point at; and host programs that connect to
// uds_path, send CONNECT lines or junk, write, read, half-close and close,
// and accept the guest's connections on listeners at uds_path_<port>.
//
// Beyond the harness's checks: the device never holds more streams than
// its cap, and none survive the reset that ends each input.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "src/devices/virtio/vsock/vsock_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;
using namespace ember::virtio::vsock;

namespace {

constexpr uint32_t kCid = 3;
constexpr uint64_t kPacketArea = 0xc0000;  // below kMemSize, above the rings
constexpr uint64_t kBufferArea = 0xd0000;
constexpr size_t kMaxClients = 32;
constexpr uint32_t kListenPorts[] = {1, 2, 3};

int ConnectTo(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

struct Harness {
  LogCounter log;
  std::string dir;
  VsockDevice* device = nullptr;
  std::unique_ptr<TransportHarness> h;
  std::vector<int> listeners;
  std::vector<int> clients;

  Harness() {
    char tmpl[] = "/tmp/ember-vsock-fuzz-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Fail("mkdtemp");
    dir = tmpl;
    VsockLimits limits;
    limits.max_connections = 16;
    limits.max_queued_rst = 16;
    limits.buf_alloc = 8192;
    auto dev = VsockDevice::Create({"vsock", kCid, dir + "/v.sock"}, limits);
    if (!dev.ok()) Fail("VsockDevice::Create");
    device = dev->get();
    for (uint32_t port : kListenPorts) {
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      sockaddr_un addr = {};
      addr.sun_family = AF_UNIX;
      std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/v.sock_%u", dir.c_str(), port);
      if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 64) != 0) {
        Fail("a listener for the guest");
      }
      listeners.push_back(fd);
    }
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
  }

  PacketHeader Header(FuzzInput& in) {
    PacketHeader p;
    p.src_cid = in.U8() < 240 ? kCid : in.U64();
    p.dst_cid = in.U8() < 240 ? kHostCid : in.U64();
    uint8_t port = in.U8();
    p.src_port = port < 250 ? 1000 + port % 4 : in.U32();
    port = in.U8();
    p.dst_port = port < 128   ? kListenPorts[port % 3]
                 : port < 250 ? (1u << 30) + port % 8  // host-initiated streams
                              : in.U32();
    p.type = in.U8() < 245 ? kTypeStream : in.U16();
    uint8_t op = in.U8();
    p.op = op < 245 ? 1 + op % 7 : in.U16();
    p.flags = in.U8() < 200 ? in.U8() % 4 : in.U32();
    uint8_t credit = in.U8();
    p.buf_alloc = credit < 128 ? 65536 : credit < 200 ? credit * 16 : in.U32();
    p.fwd_cnt = in.U8() < 200 ? in.U16() : in.U32();
    return p;
  }

  void GuestPacket(FuzzInput& in) {
    std::optional<virtio::Queue::State> q = h->QueueState(virtio::vsock::kTxQueue);
    if (!q) return;
    PacketHeader p = Header(in);
    std::span<const uint8_t> payload = in.Bytes(in.U16() % 4096);
    p.len = in.U8() < 240 ? static_cast<uint32_t>(payload.size()) : in.U32();
    std::vector<uint8_t> bytes(kHeaderSize);
    p.Encode(bytes.data());
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    if (!h->mem().Write(kPacketArea, bytes).ok()) return;
    // Up to three pieces, cut where the input says.
    std::vector<virtio::Descriptor> pieces;
    size_t at = 0;
    for (int i = 0; i < 2 && at < bytes.size(); i++) {
      size_t cut = at + in.U16() % (bytes.size() - at + 1);
      if (cut == at || cut == bytes.size()) break;
      pieces.push_back({kPacketArea + at, static_cast<uint32_t>(cut - at), false});
      at = cut;
    }
    pieces.push_back({kPacketArea + at, static_cast<uint32_t>(bytes.size() - at), false});
    uint16_t first = in.U16();
    if (in.U8() >= 250) {  // a packet the device is to write, not read
      for (virtio::Descriptor& d : pieces) d.device_writable = true;
    }
    PublishChain(h->mem(), *q, first, pieces);
    h->transport().Notify(virtio::vsock::kTxQueue);
  }

  void Buffers(FuzzInput& in, size_t queue) {
    std::optional<virtio::Queue::State> q = h->QueueState(queue);
    if (!q) return;
    int n = 1 + in.U8() % 8;
    for (int i = 0; i < n; i++) {
      uint32_t size = in.U8() < 230 ? 64 + in.U16() % 4096 : in.U8();
      uint64_t addr = kBufferArea + (in.U8() % 8) * 0x4000;
      uint16_t first = in.U16();
      PublishChain(h->mem(), *q, first, {{addr, size, in.U8() < 250}});
    }
    h->transport().Notify(static_cast<uint32_t>(queue));
  }

  int& Client(FuzzInput& in) {
    static int none = -1;
    if (clients.empty()) return none;
    return clients[in.U8() % clients.size()];
  }

  void Extra(FuzzInput& in) {
    switch (in.U8() % 9) {
      case 0:
        GuestPacket(in);
        break;
      case 1:
        Buffers(in, virtio::vsock::kRxQueue);
        break;
      case 2:
        Buffers(in, virtio::vsock::kEventQueue);
        break;
      // Host programs: the world outside Ember, on the main thread.
      case 3: {  // a host program connects, mostly with a proper line
        if (clients.size() >= kMaxClients) break;
        std::string line;
        if (in.U8() < 200) {
          line = "CONNECT " + std::to_string(in.U8() % 4) + "\n";
        } else {
          std::span<const uint8_t> junk = in.Bytes(in.U8() % 40);
          line.assign(junk.begin(), junk.end());
        }
        Outside([&] {
          int fd = ConnectTo(dir + "/v.sock");
          if (fd < 0) return;
          clients.push_back(fd);
          (void)!send(fd, line.data(), line.size(), MSG_NOSIGNAL);
        });
        break;
      }
      case 4: {  // a host program writes
        int fd = Client(in);
        std::span<const uint8_t> data = in.Bytes(in.U16() % 8192);
        if (fd >= 0) Outside([&] { (void)!send(fd, data.data(), data.size(), MSG_NOSIGNAL); });
        break;
      }
      case 5: {  // reads what it was sent
        int fd = Client(in);
        static char buf[65536];
        if (fd >= 0) Outside([&] { (void)!recv(fd, buf, sizeof(buf), MSG_DONTWAIT); });
        break;
      }
      case 6: {  // half-closes or closes
        int& fd = Client(in);
        if (fd < 0) break;
        if (in.Bool()) {
          Outside([&] { shutdown(fd, SHUT_WR); });
        } else {
          Outside([&] { close(fd); });
          fd = -1;
        }
        break;
      }
      case 7:  // accepts a guest's connection
        Outside([&] {
          for (int l : listeners) {
            int fd = accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0 && clients.size() < kMaxClients) {
              clients.push_back(fd);
            } else if (fd >= 0) {
              close(fd);
            }
          }
        });
        break;
      case 8:  // the VMM loop runs the device's fd a few times
        for (int i = 0; i < 1 + in.U8() % 4; i++) h->transport().NotifyBackend(EPOLLIN);
        break;
    }
    if (device->connections() > 16) Fail("more streams than max_connections");
  }

  void Run(FuzzInput& in) {
    h->Run(in, log);
    // A reset (a vCPU thread) leaves the dropping to the VMM thread's next
    // turn: the device's timer fired.
    h->transport().NotifyBackend(EPOLLIN);
    if (device->connections() != 0) Fail("streams outlived the device's reset");
    for (int fd : clients) {
      if (fd >= 0) close(fd);
    }
    clients.clear();
    // Guest connections nobody accepted.
    for (int l : listeners) {
      for (int fd; (fd = accept4(l, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) close(fd);
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  FuzzInput in(data, size);
  harness->Run(in);
  return 0;
}
