// What a hostile guest may put on the queues: packets with the wrong
// addresses, lengths, types and ops; chains of the wrong shape; and a
// guest that never reads. Each costs at most a stream, never the device,
// and memory and work stay bounded.
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/vsock/vsock_test_fixture.h"

namespace ember::virtio::vsock {
namespace {

std::vector<uint8_t> Encoded(const PacketHeader& h, size_t payload = 0) {
  std::vector<uint8_t> bytes(kHeaderSize + payload, 0xab);
  h.Encode(bytes.data());
  return bytes;
}

class VsockHostileTest : public VsockTest {
 protected:
  void SetUp() override {
    VsockTest::SetUp();
    Start();
    driver_->AddRxBuffers(32);
  }
  void ExpectHealthy() {
    EXPECT_FALSE(transport_->status() & kStatusNeedsReset);
    // A fresh guest connection still works.
    int listener = HostListen(7777);
    driver_->Send(driver_->Header(4000, 7777, kOpRequest));
    std::optional<testing::VsockPacket> resp = driver_->Receive();
    ASSERT_TRUE(resp);
    EXPECT_EQ(resp->header.op, kOpResponse);
    EXPECT_GE(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC), 0);
  }
};

TEST_F(VsockHostileTest, APacketFromAnotherCidIsDroppedUnanswered) {
  PacketHeader h = driver_->Header(1, 2, kOpRequest);
  h.src_cid = 42;
  driver_->Send(h);
  EXPECT_FALSE(driver_->Receive());
  EXPECT_EQ(device_->vsock_counters().bad_packets, 1u);
  ExpectHealthy();
}

TEST_F(VsockHostileTest, APacketForAnotherCidIsResetFromThatCid) {
  PacketHeader h = driver_->Header(1, 2, kOpRequest);
  h.dst_cid = 9;
  driver_->Send(h);
  std::optional<testing::VsockPacket> rst = driver_->Receive();
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->header.op, kOpRst);
  EXPECT_EQ(rst->header.src_cid, 9u);
  EXPECT_EQ(rst->header.dst_cid, kGuestCid);
  EXPECT_EQ(device_->vsock_counters().bad_packets, 1u);
  ExpectHealthy();
}

TEST_F(VsockHostileTest, NonStreamTypesAreReset) {
  PacketHeader h = driver_->Header(1, 2, kOpRequest);
  h.type = 2;  // SEQPACKET, not offered
  driver_->Send(h);
  std::optional<testing::VsockPacket> rst = driver_->Receive();
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->header.op, kOpRst);
  ExpectHealthy();
}

TEST_F(VsockHostileTest, ALengthBeyondTheChainResetsTheStream) {
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  PacketHeader h = driver_->Header(52, host_port, kOpRw);
  h.len = 1000;
  driver_->SendBytes(Encoded(h, 10));
  std::optional<testing::VsockPacket> rst = driver_->Receive();
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->header.op, kOpRst);
  EXPECT_TRUE(Closed(fd));
  h.len = 0xffffffff;  // and no stream at all
  driver_->SendBytes(Encoded(h, 10));
  EXPECT_EQ(driver_->Receive()->header.op, kOpRst);
  EXPECT_EQ(device_->vsock_counters().bad_packets, 2u);
  EXPECT_EQ(device_->counters().request_errors, 2u);
  ExpectHealthy();
}

TEST_F(VsockHostileTest, ChainsOfTheWrongShapeAreReturnedAndCounted) {
  std::vector<uint8_t> ok = Encoded(driver_->Header(1, 2, kOpRequest));
  driver_->SendBytes(std::span(ok).first(20));        // short of a header
  driver_->SendBytes(ok, {}, /*writable=*/true);      // device-writable
  EXPECT_FALSE(driver_->Receive());
  EXPECT_EQ(device_->vsock_counters().bad_packets, 2u);
  ExpectHealthy();
}

TEST_F(VsockHostileTest, UnknownOpsAndOpsOutOfTurnResetTheStream) {
  for (uint16_t op : {uint16_t{0}, uint16_t{8}, uint16_t{0xffff}, uint16_t{kOpRequest},
                      uint16_t{kOpResponse}}) {
    uint32_t host_port = 0;
    int fd = ConnectFromHost(52, &host_port);
    driver_->Send(driver_->Header(52, host_port, op));
    std::optional<testing::VsockPacket> rst = driver_->Receive();
    ASSERT_TRUE(rst) << op;
    EXPECT_EQ(rst->header.op, kOpRst) << op;
    EXPECT_TRUE(Closed(fd)) << op;
    driver_->AddRxBuffers(2);
  }
  // Without a stream, unknown ops get an RST, RSTs nothing.
  driver_->Send(driver_->Header(1, 2, 99));
  EXPECT_EQ(driver_->Receive()->header.op, kOpRst);
  driver_->Send(driver_->Header(1, 2, kOpRst));
  EXPECT_FALSE(driver_->Receive());
  EXPECT_EQ(device_->connections(), 0u);
  ExpectHealthy();
}

TEST_F(VsockHostileTest, DataBeforeTheResponseResetsTheStream) {
  int fd = HostConnect();
  Write(fd, "CONNECT 52\n");
  Pump();
  std::optional<testing::VsockPacket> req = driver_->Receive();
  ASSERT_TRUE(req);
  driver_->Send(driver_->Header(52, req->header.src_port, kOpRw), Bytes("early"));
  EXPECT_EQ(driver_->Receive()->header.op, kOpRst);
  EXPECT_TRUE(Closed(fd));
  ExpectHealthy();
}

TEST_F(VsockTest, TooSmallReceiveBuffersComeBackEmpty) {
  Start();
  driver_->AddRxBuffers(1, 20);  // not even a header
  driver_->Send(driver_->Header(1, 2, kOpRst + 10));  // owes an RST
  std::optional<testing::VsockPacket> p = driver_->Receive();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->header.op, 0) << "returned empty";
  EXPECT_EQ(device_->vsock_counters().bad_rx_buffers, 1u);
  driver_->AddRxBuffers(1);
  EXPECT_EQ(driver_->Receive()->header.op, kOpRst);
  EXPECT_FALSE(transport_->status() & kStatusNeedsReset);
}

TEST_F(VsockTest, AGuestThatNeverReadsKeepsMemoryBounded) {
  VsockLimits limits;
  limits.max_connections = 8;
  limits.max_queued_rst = 16;
  Start(limits);  // and no receive buffers, ever
  // Packets owed an RST: at most max_queued_rst wait.
  for (int i = 0; i < 1000; i++) driver_->Send(driver_->Header(i, 1, kOpCreditRequest));
  EXPECT_EQ(device_->vsock_counters().rst_dropped, 1000u - 16u);
  // Host connections: at most max_connections, the rest closed.
  std::vector<int> fds;
  for (int i = 0; i < 20; i++) {
    fds.push_back(HostConnect());
    Write(fds.back(), "CONNECT 5\n");
    Pump(5);
  }
  Pump();
  EXPECT_EQ(device_->connections(), 8u);
  EXPECT_EQ(device_->vsock_counters().conns_refused, 12u);
  for (int i = 0; i < 8; i++) EXPECT_FALSE(Closed(fds[i], 0)) << i;
  for (int i = 8; i < 20; i++) EXPECT_TRUE(Closed(fds[i])) << i;
  // Guest connections over the cap are refused too (their RST waits).
  int listener = HostListen(9);
  (void)listener;
  driver_->Send(driver_->Header(77, 9, kOpRequest));
  EXPECT_EQ(device_->connections(), 8u);
  EXPECT_EQ(device_->vsock_counters().conns_refused, 13u);
  // Host programs writing to the waiting streams wake nobody.
  for (int i = 0; i < 8; i++) Write(fds[i], "more");
  EXPECT_EQ(testing::BackendWakeups(*transport_, 100), 0);
}

TEST_F(VsockHostileTest, ABrokenQueueDrainsTheBackendWithoutSpinning) {
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  // Publish a head beyond the queue: the transmit queue breaks.
  testing::DriverQueue& tx = driver_->mmio().queue(kTxQueue);
  tx.Publish(tx.size() + 5);
  driver_->mmio().Kick(kTxQueue);
  ASSERT_TRUE(transport_->status() & kStatusNeedsReset);
  Write(fd, "into the void");
  int late = HostConnect();
  EXPECT_LE(testing::BackendWakeups(*transport_, 100), 2);
  EXPECT_TRUE(Closed(fd));
  EXPECT_TRUE(Closed(late));
}

}  // namespace
}  // namespace ember::virtio::vsock
