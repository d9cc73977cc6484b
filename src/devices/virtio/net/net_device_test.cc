// virtio-net through the host-side driver, on a real TAP in a private
// network namespace; an AF_PACKET socket on the TAP is the other end of
// the wire. The rate limiter tests serve the device's timer and TAP as
// the VMM loop does, on the wall clock.
#include "src/devices/virtio/net/net_device.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/testing/ethernet_frame.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::net {
namespace {

using testing::Buffer;

constexpr uint64_t kTxBuf = 0x80000;
constexpr uint64_t kRxBuf = 0xa0000;

std::vector<uint8_t> Frame(size_t len, uint8_t fill) { return testing::EthernetFrame(len, fill); }

class NetDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a netns";
    Start(std::nullopt, std::nullopt);
  }
  void Start(std::optional<RateLimiterConfig> rx, std::optional<RateLimiterConfig> tx) {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0);
    NetConfig config{"eth0", "tap0", std::array<uint8_t, 6>{2, 0, 0, 0, 0, 2}};
    config.rx_rate_limiter = rx;
    config.tx_rate_limiter = tx;
    auto dev = NetDevice::Create(config);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    SetLink("tap0", 9000);
    wire_ = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    ASSERT_GE(wire_, 0);
    sockaddr_ll addr = {};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = static_cast<int>(if_nametoindex("tap0"));
    ASSERT_EQ(bind(wire_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 1 << 20}}));
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    ASSERT_TRUE(driver_->Init(~0ull, 16) & kStatusDriverOk);
  }
  void TearDown() override {
    if (wire_ >= 0) close(wire_);
  }

  static void SetLink(const char* name, int mtu) {
    // No IPv6 on the test link: its neighbour discovery would put frames of
    // its own into the guest's buffers.
    std::string sysctl = std::string("/proc/sys/net/ipv6/conf/") + name + "/disable_ipv6";
    if (FILE* f = fopen(sysctl.c_str(), "w")) {
      fputs("1", f);
      fclose(f);
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr = {};
    std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_mtu = mtu;
    ASSERT_EQ(ioctl(s, SIOCSIFMTU, &ifr), 0);
    ASSERT_EQ(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
    ifr.ifr_flags |= IFF_UP;
    ASSERT_EQ(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
    close(s);
  }

  // The next frame of our test ethertype that came out of the guest.
  std::vector<uint8_t> WireReceive() {
    uint8_t buf[10000];
    for (int i = 0; i < 200; i++) {
      ssize_t n = recv(wire_, buf, sizeof(buf), 0);
      if (n >= 14 && std::memcmp(buf + 12, testing::kTestEtherType, 2) == 0) return {buf, buf + n};
      if (n < 0) usleep(5000);
    }
    return {};
  }

  void WireSend(const std::vector<uint8_t>& frame) {
    ASSERT_EQ(send(wire_, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
    usleep(20000);  // let it reach the TAP's queue
  }

  std::vector<uint8_t> Guest(uint64_t addr, size_t len) {
    std::vector<uint8_t> out(len);
    EXPECT_TRUE(mem_->Read(addr, out).ok());
    return out;
  }

  int wire_ = -1;
  NetDevice* device_ = nullptr;
  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_F(NetDeviceTest, OffersMacAndOffloads) {
  uint8_t mac[6];
  transport_->Read(0x100, mac);
  EXPECT_EQ(mac[0], 2);
  EXPECT_EQ(mac[5], 2);
  driver_->Write(0x14, 0);
  uint32_t f = driver_->Read(0x10);
  EXPECT_TRUE(f & kFeatureMac);
  EXPECT_TRUE(f & kFeatureMrgRxbuf);
  EXPECT_TRUE(f & kFeatureHostTso4);
}

// Firecracker's mtu: VIRTIO_NET_F_MTU and the le16 at offset 10 of the
// device's configuration, only when configured.
TEST(NetDeviceConfigTest, OffersTheMtuOnlyWhenConfigured) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a netns";
  ASSERT_EQ(unshare(CLONE_NEWNET), 0);
  NetConfig config{"eth0", "tap0", std::nullopt};
  auto plain = NetDevice::Create(config);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE((*plain)->features() & kFeatureMtu);
  uint8_t mtu[2] = {0xff, 0xff};
  (*plain)->ReadConfig(10, mtu);
  EXPECT_EQ(mtu[0] | mtu[1] << 8, 0);
  plain->reset();  // lets tap0 go
  config.mtu = 9000;
  auto jumbo = NetDevice::Create(config);
  ASSERT_TRUE(jumbo.ok()) << jumbo.status();
  EXPECT_TRUE((*jumbo)->features() & kFeatureMtu);
  (*jumbo)->ReadConfig(10, mtu);
  EXPECT_EQ(mtu[0] | mtu[1] << 8, 9000);
  uint8_t mac_and_mtu[12];
  (*jumbo)->ReadConfig(0, mac_and_mtu);
  EXPECT_EQ(mac_and_mtu[10] | mac_and_mtu[11] << 8, 9000) << "one read across the fields";
}

TEST_F(NetDeviceTest, TransmitsFramesToTheTap) {
  std::vector<uint8_t> frame = Frame(100, 0x11);
  ASSERT_TRUE(mem_->Write(kTxBuf, std::vector<uint8_t>(kHeaderSize, 0)).ok());
  ASSERT_TRUE(mem_->Write(kTxBuf + 64, frame).ok());
  driver_->queue(kTxQueue).Add({{kTxBuf, kHeaderSize, false}, {kTxBuf + 64, 100, false}});
  driver_->Kick(kTxQueue);
  EXPECT_EQ(WireReceive(), frame);
  EXPECT_TRUE(driver_->queue(kTxQueue).PopUsed());
  EXPECT_EQ(device_->net_counters().tx_packets, 1u);
}

TEST_F(NetDeviceTest, ReceivesFramesWhenTheGuestHasBuffers) {
  std::vector<uint8_t> frame = Frame(200, 0x22);
  WireSend(frame);
  transport_->NotifyBackend(EPOLLIN);  // no buffers yet: the frame waits
  EXPECT_FALSE(driver_->queue(kRxQueue).PopUsed());
  driver_->queue(kRxQueue).Add({{kRxBuf, 2048, true}});
  driver_->Kick(kRxQueue);
  auto used = driver_->queue(kRxQueue).PopUsed();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, kHeaderSize + 200);
  EXPECT_EQ(*mem_->ReadObj<uint16_t>(kRxBuf + 10), 1) << "num_buffers";
  EXPECT_EQ(Guest(kRxBuf + kHeaderSize, 200), frame);
  EXPECT_TRUE(driver_->TakeInterrupt());
}

TEST_F(NetDeviceTest, LargeFrameSpansMergeableBuffers) {
  std::vector<uint8_t> frame = Frame(5000, 0x33);
  for (int i = 0; i < 4; i++) driver_->queue(kRxQueue).Add({{kRxBuf + i * 2048, 2048, true}});
  WireSend(frame);
  transport_->NotifyBackend(EPOLLIN);
  std::vector<uint32_t> lens;
  while (auto used = driver_->queue(kRxQueue).PopUsed()) lens.push_back(used->len);
  ASSERT_EQ(lens.size(), 3u);
  EXPECT_EQ(lens[0] + lens[1] + lens[2], kHeaderSize + 5000);
  EXPECT_EQ(*mem_->ReadObj<uint16_t>(kRxBuf + 10), 3) << "num_buffers";
  EXPECT_EQ(Guest(kRxBuf + 2048, 16), std::vector<uint8_t>(16, 0x33));
}

// The guest (02:00:00:00:00:02, 10.0.0.2) asks who has the MMDS address.
std::vector<uint8_t> ArpForMmds() {
  std::vector<uint8_t> f = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x06,
                            0, 1, 0x08, 0, 6, 4, 0, 1,  // Ethernet, IPv4, request
                            2, 0, 0, 0, 0, 2, 10, 0, 0, 2,  // sender
                            0, 0, 0, 0, 0, 0, 169, 254, 169, 254};  // target
  f.resize(60);  // a minimum Ethernet frame
  return f;
}

TEST_F(NetDeviceTest, MmdsTakesItsFramesAndAnswersBeforeTheTap) {
  mmds::MmdsMetrics metrics;
  auto store = mmds::DataStore::Create();
  ASSERT_TRUE(store.ok()) << store.status();
  device_->SetMmds(std::make_unique<mmds::NetworkStack>(mmds::NetworkStackConfig{}, &*store,
                                                        &metrics));
  // A frame waits in the TAP for the guest's buffers.
  std::vector<uint8_t> from_wire = Frame(200, 0x44);
  WireSend(from_wire);
  // The guest asks for MMDS's MAC, and sends an ordinary frame too.
  std::vector<uint8_t> arp = ArpForMmds();
  std::vector<uint8_t> other = Frame(100, 0x55);
  ASSERT_TRUE(mem_->Write(kTxBuf, std::vector<uint8_t>(kHeaderSize, 0)).ok());
  ASSERT_TRUE(mem_->Write(kTxBuf + 64, arp).ok());
  ASSERT_TRUE(mem_->Write(kTxBuf + 256, other).ok());
  driver_->queue(kTxQueue).Add({{kTxBuf, kHeaderSize, false}, {kTxBuf + 64, 60, false}});
  driver_->queue(kTxQueue).Add({{kTxBuf, kHeaderSize, false}, {kTxBuf + 256, 100, false}});
  driver_->Kick(kTxQueue);
  EXPECT_EQ(WireReceive(), other) << "frames not for MMDS reach the TAP";
  EXPECT_EQ(metrics.rx_accepted, 1u);
  EXPECT_EQ(device_->net_counters().tx_packets, 1u) << "the ARP request never reached the TAP";
  // MMDS's reply comes first, then the TAP's frame.
  driver_->queue(kRxQueue).Add({{kRxBuf, 2048, true}});
  driver_->queue(kRxQueue).Add({{kRxBuf + 2048, 2048, true}});
  driver_->Kick(kRxQueue);
  auto first = driver_->queue(kRxQueue).PopUsed();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->len, kHeaderSize + 42) << "an ARP reply";
  std::vector<uint8_t> reply = Guest(kRxBuf + kHeaderSize, 42);
  EXPECT_EQ(std::vector<uint8_t>(reply.begin(), reply.begin() + 6),
            (std::vector<uint8_t>{2, 0, 0, 0, 0, 2}));
  EXPECT_EQ(std::vector<uint8_t>(reply.begin() + 6, reply.begin() + 12),
            std::vector<uint8_t>(mmds::kDefaultMac.begin(), mmds::kDefaultMac.end()));
  EXPECT_EQ(reply[21], 2) << "ARP reply";
  EXPECT_EQ(std::vector<uint8_t>(reply.begin() + 28, reply.begin() + 32),
            (std::vector<uint8_t>{169, 254, 169, 254}));
  EXPECT_EQ(Guest(kRxBuf, 10), std::vector<uint8_t>(10, 0)) << "a zero header";
  transport_->NotifyBackend(EPOLLIN);
  auto second = driver_->queue(kRxQueue).PopUsed();
  ASSERT_TRUE(second);
  EXPECT_EQ(Guest(kRxBuf + 2048 + kHeaderSize, 200), from_wire);
  EXPECT_EQ(metrics.tx_frames, 1u);
}

TEST_F(NetDeviceTest, WithoutMmdsItsAddressGoesToTheTap) {
  std::vector<uint8_t> arp = ArpForMmds();
  ASSERT_TRUE(mem_->Write(kTxBuf, std::vector<uint8_t>(kHeaderSize, 0)).ok());
  ASSERT_TRUE(mem_->Write(kTxBuf + 64, arp).ok());
  driver_->queue(kTxQueue).Add({{kTxBuf, kHeaderSize, false}, {kTxBuf + 64, 60, false}});
  driver_->Kick(kTxQueue);
  EXPECT_TRUE(driver_->queue(kTxQueue).PopUsed());
  EXPECT_EQ(device_->net_counters().tx_packets, 1u);
}

TEST_F(NetDeviceTest, HostileTransmitChainsAreDropped) {
  // A device-writable buffer in a transmit chain, and a chain shorter than
  // the header: both dropped and counted, both returned to the guest.
  driver_->queue(kTxQueue).Add({{kTxBuf, kHeaderSize, false}, {kTxBuf + 64, 100, true}});
  driver_->queue(kTxQueue).Add({{kTxBuf, 4, false}});
  driver_->Kick(kTxQueue);
  EXPECT_TRUE(driver_->queue(kTxQueue).PopUsed());
  EXPECT_TRUE(driver_->queue(kTxQueue).PopUsed());
  EXPECT_EQ(device_->net_counters().tx_dropped, 2u);
  EXPECT_EQ(device_->counters().request_errors, 2u);
  EXPECT_FALSE(transport_->status() & kStatusNeedsReset);
}

TEST_F(NetDeviceTest, HostileReceiveChainsAreDropped) {
  driver_->queue(kRxQueue).Add({{kRxBuf, 4, true}});            // too small for the header
  driver_->queue(kRxQueue).Add({{kRxBuf + 4096, 2048, false}});  // not writable
  WireSend(Frame(64, 1));
  WireSend(Frame(64, 2));
  transport_->NotifyBackend(EPOLLIN);
  auto a = driver_->queue(kRxQueue).PopUsed();
  auto b = driver_->queue(kRxQueue).PopUsed();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->len, 0u);
  EXPECT_EQ(b->len, 0u);
  EXPECT_EQ(device_->net_counters().rx_dropped, 2u);
  // A good buffer afterwards still works.
  driver_->queue(kRxQueue).Add({{kRxBuf, 2048, true}});
  WireSend(Frame(64, 3));
  transport_->NotifyBackend(EPOLLIN);
  auto c = driver_->queue(kRxQueue).PopUsed();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->len, kHeaderSize + 64);
}

// Limited interfaces. Every frame is kFrame bytes on the wire; the
// limiter charges it kCharged (the virtio-net header too, as Firecracker).
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr uint32_t kFrame = 1000;
constexpr uint32_t kCharged = kFrame + kHeaderSize;
// The wall clock of a shared machine: measured rates within 12%.
constexpr double kTolerance = 0.12;

RateLimiterConfig Limit(std::optional<TokenBucketConfig> bandwidth,
                        std::optional<TokenBucketConfig> ops) {
  return {bandwidth, ops};
}

class NetLimiterTest : public NetDeviceTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a netns";
  }
  void Start(std::optional<RateLimiterConfig> rx, std::optional<RateLimiterConfig> tx) {
    NetDeviceTest::Start(rx, tx);
    std::vector<uint8_t> packet(kHeaderSize, 0);
    std::vector<uint8_t> frame = Frame(kFrame, 0x44);
    packet.insert(packet.end(), frame.begin(), frame.end());
    ASSERT_TRUE(mem_->Write(kTxBuf, packet).ok());
  }

  // Frames to send, all from one buffer; buffers to receive into.
  void PostTx(int n) {
    for (int i = 0; i < n; i++) driver_->queue(kTxQueue).Add({{kTxBuf, kCharged, false}});
    driver_->Kick(kTxQueue);
  }
  void PostRx(int n) {
    for (int i = 0; i < n; i++) driver_->queue(kRxQueue).Add({{kRxBuf, 2048, true}});
    driver_->Kick(kRxQueue);
  }
  int Collect(size_t queue) {
    int n = 0;
    while (driver_->queue(queue).PopUsed()) n++;
    return n;
  }
  // Frames into the TAP's kernel queue, for the device to read.
  void SendToTap(int n) {
    std::vector<uint8_t> frame = Frame(kFrame, 0x55);
    for (int i = 0; i < n; i++) {
      ASSERT_EQ(send(wire_, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
    }
  }
  std::map<std::string, uint64_t> Metrics() {
    std::vector<std::pair<std::string, uint64_t>> out;
    device_->AppendMetrics(&out);
    return {out.begin(), out.end()};
  }
  // A PATCH that names both buckets of both directions.
  void Patch(std::optional<RateLimiterConfig> rx, std::optional<RateLimiterConfig> tx) {
    auto whole = [](const std::optional<RateLimiterConfig>& c) {
      RateLimiterUpdate u;
      u.bandwidth.emplace(c ? c->bandwidth : std::nullopt);
      u.ops.emplace(c ? c->ops : std::nullopt);
      return u;
    };
    transport_->WithDevice([&](VirtioDevice& d) {
      static_cast<NetDevice&>(d).UpdateRateLimiters(whole(rx), whole(tx));
      return 0;
    });
  }

  struct Run {
    int tx = 0, rx = 0;
    int wakeups = 0;  // the timer's
  };
  // For `duration`, keeps 16 frames posted to send (`tx`) and, for `rx`,
  // 64 frames waiting in the TAP with 8 buffers posted for them; serves
  // the device's timer and TAP as the VMM loop would, sleeping when
  // nothing moves.
  Run Stream(milliseconds duration, bool tx, bool rx) {
    UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
    epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.fd = device_->timer_fd();
    EXPECT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, device_->timer_fd(), &ev), 0);
    ev.events = device_->backend_events();
    ev.data.fd = device_->backend_fd();
    EXPECT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, device_->backend_fd(), &ev), 0);
    Run run;
    Clock::time_point end = Clock::now() + duration;
    while (Clock::now() < end) {
      if (tx && tx_posted_ < 16) {
        PostTx(16 - tx_posted_);
        tx_posted_ = 16;
      }
      if (rx && rx_posted_ < 8) {
        PostRx(8 - rx_posted_);
        rx_posted_ = 8;
      }
      if (rx && in_tap_ < 64) {
        SendToTap(64 - in_tap_);
        in_tap_ = 64;
      }
      int sent = Collect(kTxQueue), received = Collect(kRxQueue);
      run.tx += sent;
      run.rx += received;
      tx_posted_ -= sent;
      rx_posted_ -= received;
      in_tap_ -= received;
      // Ready fds are served even while frames move; it sleeps only when
      // none did.
      int left = static_cast<int>(
          std::chrono::duration_cast<milliseconds>(end - Clock::now()).count());
      epoll_event ready[2];
      int n = epoll_wait(ep.get(), ready, 2, sent + received > 0 ? 0 : std::max(left, 0));
      for (int i = 0; i < n; i++) {
        if (ready[i].data.fd == device_->timer_fd()) {
          run.wakeups++;
          transport_->NotifyTimer();
        } else {
          transport_->NotifyBackend(ready[i].events);
        }
      }
    }
    // What the last wakeup moved counts too (the device's counters do).
    int sent = Collect(kTxQueue), received = Collect(kRxQueue);
    run.tx += sent;
    run.rx += received;
    tx_posted_ -= sent;
    rx_posted_ -= received;
    in_tap_ -= received;
    return run;
  }

  // Across Streams: frames posted and not yet used, frames in the TAP.
  int tx_posted_ = 0, rx_posted_ = 0, in_tap_ = 0;
};

TEST_F(NetLimiterTest, TransmitBandwidthKeepsToTheBucket) {
  // Ten frames per 100 ms: in 1 s the full bucket and 10 refills.
  ASSERT_NO_FATAL_FAILURE(Start(std::nullopt, Limit(TokenBucketConfig{10 * kCharged, 100, 0},
                                                    std::nullopt)));
  Run run = Stream(milliseconds(1000), true, false);
  RecordProperty("tx_frames_in_1s_expected_110", run.tx);
  EXPECT_NEAR(run.tx, 110, 110 * kTolerance);
  auto m = Metrics();
  EXPECT_GT(m.at("tx_rate_limiter_throttled"), 0u);
  EXPECT_GT(m.at("tx_rate_limiter_event_count"), 0u);
  EXPECT_EQ(m.at("tx_dropped"), 0u) << "held back, never dropped";
  EXPECT_EQ(m.at("tx_packets_count"), static_cast<uint64_t>(run.tx));
  EXPECT_LE(run.wakeups, run.tx) << "the timer wakes the loop once per wait, no more";
}

TEST_F(NetLimiterTest, TransmitOpsKeepToTheBucket) {
  // 20 frames per 100 ms, bytes free.
  ASSERT_NO_FATAL_FAILURE(Start(std::nullopt, Limit(std::nullopt, TokenBucketConfig{20, 100, 0})));
  Run run = Stream(milliseconds(1000), true, false);
  RecordProperty("tx_frames_in_1s_expected_220", run.tx);
  EXPECT_NEAR(run.tx, 220, 220 * kTolerance);
}

TEST_F(NetLimiterTest, ReceiveBandwidthKeepsToTheBucket) {
  ASSERT_NO_FATAL_FAILURE(Start(Limit(TokenBucketConfig{10 * kCharged, 100, 0}, std::nullopt),
                                std::nullopt));
  Run run = Stream(milliseconds(1000), false, true);
  RecordProperty("rx_frames_in_1s_expected_110", run.rx);
  EXPECT_NEAR(run.rx, 110, 110 * kTolerance);
  auto m = Metrics();
  EXPECT_GT(m.at("rx_rate_limiter_throttled"), 0u);
  EXPECT_GT(m.at("rx_event_rate_limiter_count"), 0u);
  EXPECT_EQ(m.at("rx_dropped"), 0u) << "held back, never dropped";
  EXPECT_EQ(m.at("rx_bytes_count"), static_cast<uint64_t>(run.rx) * kFrame);
  EXPECT_LE(run.wakeups, run.rx);
}

TEST_F(NetLimiterTest, ReceiveOpsKeepToTheBucket) {
  ASSERT_NO_FATAL_FAILURE(Start(Limit(std::nullopt, TokenBucketConfig{20, 100, 0}), std::nullopt));
  Run run = Stream(milliseconds(1000), false, true);
  RecordProperty("rx_frames_in_1s_expected_220", run.rx);
  EXPECT_NEAR(run.rx, 220, 220 * kTolerance);
}

TEST_F(NetLimiterTest, OneTimeBurstComesFirst) {
  // One frame a second, with four frames of burst: five at once, then a wait.
  TokenBucketConfig bucket{kCharged, 1000, 4 * kCharged};
  ASSERT_NO_FATAL_FAILURE(Start(Limit(bucket, std::nullopt), Limit(bucket, std::nullopt)));
  PostTx(8);
  EXPECT_EQ(Collect(kTxQueue), 5);
  SendToTap(8);
  usleep(20000);
  PostRx(8);
  EXPECT_EQ(Collect(kRxQueue), 5);
  EXPECT_EQ(device_->tx_rate_limiter().bandwidth()->one_time_burst(), 0u);
  EXPECT_EQ(device_->rx_rate_limiter().bandwidth()->one_time_burst(), 0u);
}

TEST_F(NetLimiterTest, HeldFramesWaitWithoutSpinningAndAreNotDropped) {
  // One frame per 300 ms each way: the first goes, the rest wait.
  auto one = Limit(std::nullopt, TokenBucketConfig{1, 300, 0});
  ASSERT_NO_FATAL_FAILURE(Start(one, one));
  PostTx(3);
  SendToTap(3);
  usleep(20000);
  PostRx(3);
  EXPECT_EQ(Collect(kTxQueue), 1);
  EXPECT_EQ(Collect(kRxQueue), 1);
  for (int i = 0; i < 100; i++) {  // a guest kicking, a TAP signalling, while they wait
    driver_->Kick(kTxQueue);
    driver_->Kick(kRxQueue);
    transport_->NotifyBackend(EPOLLIN);
  }
  EXPECT_EQ(Collect(kTxQueue) + Collect(kRxQueue), 0) << "no frame skips the limiter";
  EXPECT_EQ(testing::TimerWakeups(*transport_, 20, 10), 0) << "the loop sleeps meanwhile";
  // Both directions wait on one timer (their waits a few us apart); each
  // goes on, one frame, when its own wait is over.
  for (int round = 0; round < 2; round++) {
    int tx = 0, rx = 0;
    for (int i = 0; i < 200 && (tx == 0 || rx == 0); i++) {
      testing::TimerWakeups(*transport_, 1, 10);
      tx += Collect(kTxQueue);
      rx += Collect(kRxQueue);
    }
    EXPECT_EQ(tx, 1);
    EXPECT_EQ(rx, 1);
  }
  auto m = Metrics();
  EXPECT_EQ(m.at("rx_dropped") + m.at("tx_dropped"), 0u);
  EXPECT_EQ(m.at("rx_packets_count"), 3u);
  EXPECT_EQ(m.at("tx_packets_count"), 3u);
  EXPECT_EQ(m.at("rx_event_rate_limiter_count"), 2u);
  EXPECT_EQ(m.at("tx_rate_limiter_event_count"), 2u);
  EXPECT_GE(m.at("rx_rate_limiter_throttled"), 100u);
}

TEST_F(NetLimiterTest, LimitersChangedMidStreamAndRemoved) {
  // Both ways at once on the one timer: send 100 frames/s, receive 50/s.
  ASSERT_NO_FATAL_FAILURE(Start(Limit(std::nullopt, TokenBucketConfig{5, 100, 0}),
                                Limit(TokenBucketConfig{10 * kCharged, 100, 0}, std::nullopt)));
  Run slow = Stream(milliseconds(500), true, true);
  RecordProperty("slow_tx_expected_60", slow.tx);
  RecordProperty("slow_rx_expected_30", slow.rx);
  EXPECT_NEAR(slow.tx, 10 + 50, 60 * kTolerance);
  EXPECT_NEAR(slow.rx, 5 + 25, 30 * kTolerance);
  // PATCH: four times both rates (fresh, full buckets).
  Patch(Limit(std::nullopt, TokenBucketConfig{20, 100, 0}),
        Limit(TokenBucketConfig{40 * kCharged, 100, 0}, std::nullopt));
  Run fast = Stream(milliseconds(500), true, true);
  RecordProperty("fast_tx_expected_240", fast.tx);
  RecordProperty("fast_rx_expected_120", fast.rx);
  EXPECT_NEAR(fast.tx, 40 + 200, 240 * kTolerance);
  EXPECT_NEAR(fast.rx, 20 + 100, 120 * kTolerance);
  // PATCH removing both: what waits goes at once.
  Patch(std::nullopt, std::nullopt);
  EXPECT_FALSE(device_->rx_rate_limiter().enabled());
  EXPECT_FALSE(device_->tx_rate_limiter().enabled());
  Run free = Stream(milliseconds(100), true, true);
  RecordProperty("free_tx_in_100ms", free.tx);
  RecordProperty("free_rx_in_100ms", free.rx);
  EXPECT_GT(free.tx, 200) << "no limit any more (it was 40 per 100 ms)";
  EXPECT_GT(free.rx, 100) << "no limit any more (it was 20 per 100 ms)";
  EXPECT_EQ(Metrics().at("rx_dropped"), 0u);
}

TEST_F(NetLimiterTest, AResetDisarmsTheTimer) {
  ASSERT_NO_FATAL_FAILURE(Start(std::nullopt, Limit(std::nullopt, TokenBucketConfig{1, 300, 0})));
  PostTx(2);
  EXPECT_EQ(Collect(kTxQueue), 1);
  driver_->Write(0x70, 0);
  EXPECT_EQ(testing::TimerWakeups(*transport_, 1, 500), 0);
}

}  // namespace
}  // namespace ember::virtio::net
