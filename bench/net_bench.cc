// virtio-net packets per second through the host-side driver and a real
// TAP in a private network namespace (needs root). Transmit: the driver's
// frames go out of the TAP into the host stack. Receive: an AF_PACKET
// socket sends frames into the TAP and the device moves them into the
// driver's buffers (the sender's cost is included). 32 frames a batch.
//
//   build/ember_bench_net [--benchmark_format=json --benchmark_out=net.json]
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <cstdio>

#include "src/common/clock.h"
#include "src/common/log.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/net/net_device.h"
#include "src/devices/virtio/testing/ethernet_frame.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::net {
namespace {

constexpr int kBatch = 32;
constexpr uint64_t kFrames = 0x100000;

struct Rig {
  GuestMemory mem = *GuestMemory::Create({{0, 16 << 20}});
  NetDevice* device = nullptr;
  std::unique_ptr<MmioTransport> transport;
  std::unique_ptr<testing::MmioDriver> driver;
  int wire = -1;
  std::string error;

  Rig() {
    SetLogLevel(LogLevel::kError);
    if (unshare(CLONE_NEWNET) != 0) {
      error = "needs root (a private network namespace)";
      return;
    }
    auto dev = NetDevice::Create({"eth0", "tap0", std::nullopt});
    if (!dev.ok()) {
      error = std::string(dev.status().message());
      return;
    }
    device = dev->get();
    if (FILE* f = fopen("/proc/sys/net/ipv6/conf/tap0/disable_ipv6", "w")) {
      fputs("1", f);
      fclose(f);
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr = {};
    std::strcpy(ifr.ifr_name, "tap0");
    ioctl(s, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    ioctl(s, SIOCSIFFLAGS, &ifr);
    close(s);
    wire = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    sockaddr_ll addr = {};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = static_cast<int>(if_nametoindex("tap0"));
    bind(wire, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    transport = std::make_unique<MmioTransport>(std::move(*dev), &mem,
                                                UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver = std::make_unique<testing::MmioDriver>(*transport, mem, 0x10000);
    driver->Init(~0ull, 256);
  }
};

Rig& TheRig() {
  static Rig rig;
  return rig;
}

std::vector<uint8_t> Frame(size_t len) { return testing::EthernetFrame(len, 0x42); }

void BM_NetTx(benchmark::State& state) {
  Rig& rig = TheRig();
  if (!rig.error.empty()) return state.SkipWithError(rig.error.c_str());
  const size_t len = state.range(0);
  std::vector<uint8_t> packet(kHeaderSize, 0);
  std::vector<uint8_t> frame = Frame(len);
  packet.insert(packet.end(), frame.begin(), frame.end());
  for (int i = 0; i < kBatch; i++) (void)rig.mem.Write(kFrames + i * 2048, packet);
  testing::DriverQueue& q = rig.driver->queue(kTxQueue);
  double cpu_start = ProcessCpuMs() * 1e3;
  int64_t frames = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; i++) {
      q.Add({{kFrames + i * 2048ull, static_cast<uint32_t>(packet.size()), false}});
    }
    rig.driver->Kick(kTxQueue);
    while (q.PopUsed()) frames++;
  }
  state.SetItemsProcessed(frames);
  state.SetBytesProcessed(frames * len);
  state.counters["host_cpu_us_per_frame"] = (ProcessCpuMs() * 1e3 - cpu_start) / std::max<int64_t>(frames, 1);
  state.counters["tx_dropped"] = rig.device->net_counters().tx_dropped;
}

void BM_NetRx(benchmark::State& state) {
  Rig& rig = TheRig();
  if (!rig.error.empty()) return state.SkipWithError(rig.error.c_str());
  const size_t len = state.range(0);
  std::vector<uint8_t> frame = Frame(len);
  testing::DriverQueue& q = rig.driver->queue(kRxQueue);
  double cpu_start = ProcessCpuMs() * 1e3;
  int64_t frames = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; i++) {
      q.Add({{kFrames + 0x100000 + i * 2048ull, 2048, true}});
      (void)!send(rig.wire, frame.data(), frame.size(), 0);
    }
    rig.driver->Kick(kRxQueue);
    rig.transport->NotifyBackend(EPOLLIN);
    while (q.PopUsed()) frames++;
  }
  state.SetItemsProcessed(frames);
  state.SetBytesProcessed(frames * len);
  state.counters["host_cpu_us_per_frame"] = (ProcessCpuMs() * 1e3 - cpu_start) / std::max<int64_t>(frames, 1);
}

BENCHMARK(BM_NetTx)->ArgName("frame_bytes")->Arg(64)->Arg(1500)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_NetRx)->ArgName("frame_bytes")->Arg(64)->Arg(1500)->UseRealTime()->MinTime(1.0);

}  // namespace
}  // namespace ember::virtio::net

BENCHMARK_MAIN();
