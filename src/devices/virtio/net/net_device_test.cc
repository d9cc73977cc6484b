// virtio-net through the host-side driver, on a real TAP in a private
// network namespace; an AF_PACKET socket on the TAP is the other end of
// the wire.
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

#include "src/devices/virtio/mmio_transport.h"
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
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "needs root for a netns";
    auto dev = NetDevice::Create({"eth0", "tap0", std::array<uint8_t, 6>{2, 0, 0, 0, 0, 2}});
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

}  // namespace
}  // namespace ember::virtio::net
