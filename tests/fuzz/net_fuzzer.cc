// libFuzzer target: virtio-net's receive and transmit paths behind its
// transport (transport_harness.h), with frames of the fuzzer's bytes
// arriving from the host and the guest's frames leaving to it.
//
// NetDevice reads and writes a TAP. It is made on a real TAP in a private
// network namespace (so the fuzzer needs root, as the device's unit test
// does; without it the fuzzer exits 77, which ctest counts as skipped),
// and then, except while the device may be activating (activation sets the
// TAP's offloads with an ioctl), a datagram socket pair stands at the TAP's
// fd number: what the device reads is a frame the fuzzer wrote, and what it
// writes the fuzzer reads back and checks (a frame leaves whole, with its
// 12-byte header, at most kMaxPacket bytes).
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "src/devices/virtio/net/net_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;
using ember::virtio::net::NetDevice;

namespace {

struct Harness {
  LogCounter log;
  std::unique_ptr<TransportHarness> h;
  int tap_fd = -1;    // the number the device uses
  int tap_saved = -1; // the TAP itself, while the socket stands in for it
  int host = -1;      // the fuzzer's end of the socket pair
  int device = -1;    // the device's end

  Harness() {
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
      fprintf(stderr, "net_fuzzer: needs root for a TAP in a private network namespace; skipped\n");
      exit(77);
    }
    auto dev = NetDevice::Create({"eth0", "emberfuzz0", std::array<uint8_t, 6>{2, 0, 0, 0, 0, 1}});
    if (!dev.ok()) {
      fprintf(stderr, "net_fuzzer: %s; skipped\n", std::string(dev.status().message()).c_str());
      exit(77);
    }
    tap_fd = (*dev)->backend_fd();
    tap_saved = dup(tap_fd);
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
      Fail("socketpair");
    }
    host = pair[0];
    device = pair[1];
    int big = 1 << 20;
    setsockopt(host, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(device, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->set_control_hook([this](bool before) {
      Outside([&] { dup2(before ? tap_saved : device, tap_fd); });
    });
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
    dup2(device, tap_fd);
  }

  void Extra(FuzzInput& in) {
    switch (in.U8() % 3) {
      case 0: {  // a frame from the host (header and all), then the fd is ready
        std::span<const uint8_t> frame = in.Bytes(in.U16() % 2048);
        Outside([&] { (void)!send(host, frame.data(), frame.size(), 0); });
        h->transport().NotifyBackend(EPOLLIN);
        break;
      }
      case 1: {  // a large frame: the input's bytes repeated
        std::vector<uint8_t> frame(in.U16() + 1);
        std::span<const uint8_t> pattern = in.Bytes(16);
        for (size_t i = 0; i < frame.size(); i++) {
          frame[i] = pattern.empty() ? 0 : pattern[i % pattern.size()];
        }
        Outside([&] { (void)!send(host, frame.data(), frame.size(), 0); });
        h->transport().NotifyBackend(EPOLLIN);
        break;
      }
      case 2:
        Outside([&] { Drain(); });
        break;
    }
  }

  // What the guest sent: each a whole frame with its header.
  void Drain() {
    static std::vector<uint8_t> buf(virtio::net::kMaxPacket + 1);
    for (;;) {
      ssize_t n = recv(host, buf.data(), buf.size(), 0);
      if (n < 0) break;
      if (static_cast<size_t>(n) < virtio::net::kHeaderSize ||
          static_cast<size_t>(n) > virtio::net::kMaxPacket) {
        Fail("the device sent a frame shorter than its header or over kMaxPacket");
      }
    }
  }

  void Run(FuzzInput& in) {
    h->Run(in, log);
    Drain();
    // Frames the device did not take are dropped before the next input.
    static std::vector<uint8_t> buf(virtio::net::kMaxPacket + 1);
    while (recv(device, buf.data(), buf.size(), MSG_DONTWAIT) >= 0) {
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
