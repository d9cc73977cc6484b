// Credit-based flow control (virtio 1.2, 5.10.6.3) at its limits, both
// ways, and guests that lie about their credit.
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/vsock/vsock_test_fixture.h"

namespace ember::virtio::vsock {
namespace {

size_t PayloadBytes(const std::vector<testing::VsockPacket>& packets) {
  size_t n = 0;
  for (const auto& p : packets) n += p.header.op == kOpRw ? p.payload.size() : 0;
  return n;
}

TEST_F(VsockTest, TheDeviceSendsNoMoreThanTheGuestsCreditAndResumesOnAnUpdate) {
  Start();
  uint32_t host_port = 0;
  driver_->buf_alloc = 1000;
  int fd = ConnectFromHost(52, &host_port);
  Write(fd, std::string(5000, 'x'));
  driver_->AddRxBuffers(16);
  Pump();
  std::vector<testing::VsockPacket> got = driver_->ReceiveAll();
  EXPECT_EQ(PayloadBytes(got), 1000u);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().header.op, kOpCreditRequest) << "out of credit, the device asks";
  // No credit: the host socket is not polled, so its bytes wake nobody.
  EXPECT_EQ(testing::BackendWakeups(*transport_, 100), 0);

  // The guest read 600 of them.
  driver_->fwd_cnt = 600;
  driver_->Send(driver_->Header(52, host_port, kOpCreditUpdate));
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 600u);
  driver_->fwd_cnt = 1600;
  driver_->buf_alloc = 1 << 20;
  driver_->Send(driver_->Header(52, host_port, kOpCreditUpdate));
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 3400u);
}

TEST_F(VsockTest, AGuestWithoutReceiveBuffersMakesNothingSpin) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  while (driver_->Receive()) {
  }
  // Use up the buffers the handshake left.
  Write(fd, "a");
  Pump();
  while (driver_->rx_buffers_given() > 0) {
    Write(fd, "a");
    Pump();
    driver_->ReceiveAll();
  }
  Write(fd, std::string(100000, 'y'));
  EXPECT_LE(testing::BackendWakeups(*transport_, 100), 1);
  driver_->AddRxBuffers(64, 65536);
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 100000u);
}

TEST_F(VsockTest, TheDeviceAdvertisesCreditAndUpdatesItAsItForwards) {
  VsockLimits limits;
  limits.buf_alloc = 8192;
  Start(limits);
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  std::vector<uint8_t> chunk(2048, 'z');
  for (int i = 0; i < 4; i++) driver_->Send(driver_->Header(52, host_port, kOpRw), chunk);
  EXPECT_EQ(Read(fd, 16384).size() > 0, true);
  // Half the buffer forwarded since the guest last heard: an update.
  std::vector<testing::VsockPacket> got = driver_->ReceiveAll();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().header.op, kOpCreditUpdate);
  EXPECT_EQ(got.back().header.buf_alloc, 8192u);
  EXPECT_GE(got.back().header.fwd_cnt, 4096u);
}

TEST_F(VsockTest, AGuestSendingBeyondItsCreditIsReset) {
  VsockLimits limits;
  limits.buf_alloc = 4096;
  Start(limits);
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  // One packet over the whole buffer.
  driver_->Send(driver_->Header(52, host_port, kOpRw), std::vector<uint8_t>(5000, 1));
  std::optional<testing::VsockPacket> rst = driver_->Receive();
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->header.op, kOpRst);
  EXPECT_TRUE(Closed(fd));
  EXPECT_EQ(device_->vsock_counters().credit_violations, 1u);
  EXPECT_EQ(device_->connections(), 0u);
}

TEST_F(VsockTest, AGuestThatIgnoresCreditFillsAtMostTheBufferThenIsReset) {
  VsockLimits limits;
  limits.buf_alloc = 4096;
  Start(limits);
  uint32_t host_port = 0;
  ConnectFromHost(52, &host_port);  // the host program never reads
  std::vector<uint8_t> chunk(4096, 2);
  int sent = 0;
  for (; sent < 10000 && device_->connections() == 1; sent++) {
    driver_->Send(driver_->Header(52, host_port, kOpRw), chunk);
  }
  EXPECT_EQ(device_->connections(), 0u) << "still accepting after " << sent << " packets";
  EXPECT_EQ(device_->vsock_counters().credit_violations, 1u);
  // Its buffers went to credit updates; the RST waits for one more.
  driver_->ReceiveAll();
  driver_->AddRxBuffers(4);
  bool reset = false;
  for (const auto& p : driver_->ReceiveAll()) reset |= p.header.op == kOpRst;
  EXPECT_TRUE(reset);
}

TEST_F(VsockTest, AGuestLyingAboutWhatItFreedGetsNoData) {
  Start();
  uint32_t host_port = 0;
  driver_->buf_alloc = 4096;
  int fd = ConnectFromHost(52, &host_port);
  // fwd_cnt ahead of what it was ever sent: the device trusts none of it.
  driver_->fwd_cnt = 1u << 31;
  driver_->Send(driver_->Header(52, host_port, kOpCreditUpdate));
  Write(fd, "data");
  driver_->AddRxBuffers(4);
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 0u);
  EXPECT_EQ(testing::BackendWakeups(*transport_, 50), 0);
  // Honest again.
  driver_->fwd_cnt = 0;
  driver_->Send(driver_->Header(52, host_port, kOpCreditUpdate));
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 4u);
}

TEST_F(VsockTest, AGuestClaimingAHugeBufferGetsOnlyWhatItsBuffersHold) {
  Start();
  uint32_t host_port = 0;
  driver_->buf_alloc = 0xffffffff;
  int fd = ConnectFromHost(52, &host_port);  // leaves 7 buffers of 4 KiB
  Write(fd, std::string(40000, 'q'));
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 7 * (4096 - kHeaderSize));
  driver_->AddRxBuffers(2, 1024);
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()), 2 * (1024 - kHeaderSize));
  driver_->AddRxBuffers(16, 4096);
  Pump();
  EXPECT_EQ(PayloadBytes(driver_->ReceiveAll()),
            40000 - 7 * (4096 - kHeaderSize) - 2 * (1024 - kHeaderSize));
}

}  // namespace
}  // namespace ember::virtio::vsock
