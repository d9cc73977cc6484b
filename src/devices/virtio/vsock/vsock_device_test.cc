// virtio-vsock through the host-side driver: creation, the handshake
// both ways, data both ways, and the ends of streams.
#include "src/devices/virtio/vsock/vsock_device.h"

#include <sys/stat.h>

#include <fstream>

#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/vsock/vsock_test_fixture.h"

namespace ember::virtio::vsock {
namespace {

TEST_F(VsockTest, CreateListensAndTheDestructorRemovesTheSocket) {
  {
    auto dev = VsockDevice::Create({"", kGuestCid, uds_});
    ASSERT_TRUE(dev.ok()) << dev.status();
    struct stat st;
    ASSERT_EQ(stat(uds_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ((*dev)->config().uds_path, uds_);
    EXPECT_EQ((*dev)->device_type(), 19u);
    EXPECT_EQ((*dev)->metrics_name(), "vsock");
  }
  EXPECT_FALSE(std::filesystem::exists(uds_));
}

TEST_F(VsockTest, CreateFailsForAnExistingPathAndLeavesItAlone) {
  std::ofstream(uds_) << "mine";
  auto dev = VsockDevice::Create({"", kGuestCid, uds_});
  EXPECT_EQ(dev.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(dev.status().message().find("already exists"), std::string::npos) << dev.status();
  std::ifstream in(uds_);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "mine");
}

TEST_F(VsockTest, CreateFailsForAMissingDirectoryAndLeavesNothing) {
  auto dev = VsockDevice::Create({"", kGuestCid, dir_ + "/nowhere/v.sock"});
  EXPECT_EQ(dev.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(dev.status().message().find("does not exist"), std::string::npos) << dev.status();
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}

TEST_F(VsockTest, CreateRefusesReservedCidsAndLongPaths) {
  for (uint32_t cid : {0u, 1u, 2u, 0xffffffffu}) {
    auto dev = VsockDevice::Create({"", cid, uds_});
    EXPECT_EQ(dev.status().code(), absl::StatusCode::kInvalidArgument) << cid;
  }
  auto dev = VsockDevice::Create({"", kGuestCid, dir_ + "/" + std::string(120, 'x')});
  EXPECT_EQ(dev.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}

TEST_F(VsockTest, TheDestructorLeavesAFileThatReplacedTheSocket) {
  auto dev = VsockDevice::Create({"", kGuestCid, uds_});
  ASSERT_TRUE(dev.ok());
  std::filesystem::remove(uds_);
  std::ofstream(uds_) << "someone else's";
  dev->reset();
  EXPECT_TRUE(std::filesystem::exists(uds_));
}

TEST_F(VsockTest, ConfigSpaceHoldsTheCid) {
  Start();
  uint8_t config[12];
  transport_->Read(0x100, config);
  EXPECT_EQ(config[0], kGuestCid);
  for (int i = 1; i < 12; i++) EXPECT_EQ(config[i], 0) << i;
  driver_->mmio().Write(0x14, 1);
  EXPECT_TRUE(driver_->mmio().Read(0x10) & 1) << "VERSION_1";
}

TEST_F(VsockTest, HostConnectsToAGuestListener) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  EXPECT_GE(host_port, 1u << 30);
  EXPECT_EQ(device_->vsock_counters().conns_added, 1u);

  // Host to guest.
  Write(fd, "hello guest");
  Pump();
  std::optional<testing::VsockPacket> rw = driver_->Receive();
  ASSERT_TRUE(rw);
  EXPECT_EQ(rw->header.op, kOpRw);
  EXPECT_EQ(rw->header.src_cid, kHostCid);
  EXPECT_EQ(rw->header.dst_cid, kGuestCid);
  EXPECT_EQ(rw->header.src_port, host_port);
  EXPECT_EQ(rw->header.dst_port, 52u);
  EXPECT_EQ(rw->header.len, 11u);
  EXPECT_EQ(Text(rw->payload), "hello guest");

  // Guest to host.
  driver_->Send(driver_->Header(52, host_port, kOpRw), Bytes("hello host"));
  EXPECT_EQ(Read(fd), "hello host");
  EXPECT_EQ(device_->vsock_counters().tx_bytes_count, 10u);
  EXPECT_EQ(device_->vsock_counters().rx_bytes_count, 11u);
}

TEST_F(VsockTest, TheConnectLineMayArriveInPiecesAndDataMayFollowIt) {
  Start();
  driver_->AddRxBuffers(8);
  int fd = HostConnect();
  Write(fd, "conn");
  Pump();
  EXPECT_FALSE(driver_->Receive());
  Write(fd, "ect  77 \nearly bytes");
  Pump();
  std::optional<testing::VsockPacket> req = driver_->Receive();
  ASSERT_TRUE(req);
  ASSERT_EQ(req->header.op, kOpRequest);
  EXPECT_EQ(req->header.dst_port, 77u);
  EXPECT_FALSE(driver_->Receive()) << "no data before the guest answers";
  driver_->Send(driver_->Header(77, req->header.src_port, kOpResponse));
  EXPECT_EQ(Read(fd), "OK " + std::to_string(req->header.src_port) + "\n");
  Pump();
  std::optional<testing::VsockPacket> rw = driver_->Receive();
  ASSERT_TRUE(rw);
  EXPECT_EQ(Text(rw->payload), "early bytes");
}

TEST_F(VsockTest, HostConnectionToAPortNobodyListensOnIsClosed) {
  Start();
  driver_->AddRxBuffers(4);
  int fd = HostConnect();
  Write(fd, "CONNECT 1234\n");
  Pump();
  std::optional<testing::VsockPacket> req = driver_->Receive();
  ASSERT_TRUE(req);
  ASSERT_EQ(req->header.op, kOpRequest);
  driver_->Send(driver_->Header(1234, req->header.src_port, kOpRst));
  EXPECT_TRUE(Closed(fd));
  EXPECT_EQ(device_->connections(), 0u);
  EXPECT_FALSE(driver_->Receive()) << "an RST is not answered";
}

TEST_F(VsockTest, JunkInsteadOfConnectClosesTheHostSocket) {
  Start();
  for (std::string junk : std::vector<std::string>{"HELLO 5\n", "CONNECT\n", "CONNECT -5\n",
                                                   "CONNECT 99999999999\n", std::string(40, 'a')}) {
    int fd = HostConnect();
    Write(fd, junk);
    Pump();
    EXPECT_TRUE(Closed(fd)) << junk;
  }
  EXPECT_EQ(device_->connections(), 0u);
  EXPECT_EQ(device_->vsock_counters().conns_added, 0u);
}

TEST_F(VsockTest, AHostProgramThatSaysNothingIsClosedInTime) {
  VsockLimits limits;
  limits.connect_line_timeout_ms = 50;
  Start(limits);
  int fd = HostConnect();
  Pump(200);
  EXPECT_TRUE(Closed(fd, 0));
  EXPECT_EQ(device_->connections(), 0u);
}

TEST_F(VsockTest, AGuestThatNeverAnswersARequestTimesOut) {
  VsockLimits limits;
  limits.request_timeout_ms = 50;
  Start(limits);
  driver_->AddRxBuffers(4);
  int fd = HostConnect();
  Write(fd, "CONNECT 9\n");
  Pump(200);
  EXPECT_TRUE(Closed(fd, 0));
  std::vector<testing::VsockPacket> got = driver_->ReceiveAll();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].header.op, kOpRequest);
  EXPECT_EQ(got[1].header.op, kOpRst) << "the guest hears the request is off";
  EXPECT_EQ(device_->vsock_counters().conns_killed, 1u);
}

TEST_F(VsockTest, GuestConnectsToAHostListener) {
  Start();
  driver_->AddRxBuffers(8);
  int listener = HostListen(5000);
  driver_->Send(driver_->Header(1025, 5000, kOpRequest));
  std::optional<testing::VsockPacket> resp = driver_->Receive();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->header.op, kOpResponse);
  EXPECT_EQ(resp->header.src_port, 5000u);
  EXPECT_EQ(resp->header.dst_port, 1025u);
  EXPECT_GT(resp->header.buf_alloc, 0u);
  int fd = Track(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_GE(fd, 0);

  driver_->Send(driver_->Header(1025, 5000, kOpRw), Bytes("ping"));
  EXPECT_EQ(Read(fd), "ping");
  Write(fd, "pong");
  Pump();
  std::optional<testing::VsockPacket> rw = driver_->Receive();
  ASSERT_TRUE(rw);
  EXPECT_EQ(Text(rw->payload), "pong");
}

TEST_F(VsockTest, GuestConnectionToAMissingListenerIsReset) {
  Start();
  driver_->AddRxBuffers(4);
  driver_->Send(driver_->Header(1025, 6000, kOpRequest));
  std::optional<testing::VsockPacket> rst = driver_->Receive();
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->header.op, kOpRst);
  EXPECT_EQ(rst->header.src_port, 6000u);
  EXPECT_EQ(rst->header.dst_port, 1025u);
  EXPECT_EQ(device_->connections(), 0u);
}

TEST_F(VsockTest, HeaderAndPayloadMayBeCutAnywhere) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  std::string data = "0123456789abcdefghij";
  for (std::vector<size_t> cuts : std::vector<std::vector<size_t>>{
           {1}, {8, 16, 43}, {44}, {45}, {20, 50, 51, 60}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}) {
    driver_->Send(driver_->Header(52, host_port, kOpRw), Bytes(data), cuts);
    EXPECT_EQ(Read(fd), data);
  }
  // Receive buffers cut too, the header across three of them.
  driver_->AddRxBuffers(1, 4096, {10, 30, 50});
  Write(fd, data);
  Pump();
  std::optional<testing::VsockPacket> rw = driver_->Receive();
  ASSERT_TRUE(rw);
  EXPECT_EQ(rw->header.op, kOpRw);
  EXPECT_EQ(Text(rw->payload), data);
  EXPECT_EQ(device_->vsock_counters().bad_packets, 0u);
}

TEST_F(VsockTest, HostClosingMidTransferShutsTheGuestSideDown) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  Write(fd, "last words");
  fds_.pop_back();  // closes fd
  Pump();
  std::vector<testing::VsockPacket> got = driver_->ReceiveAll();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].header.op, kOpRw);
  EXPECT_EQ(Text(got[0].payload), "last words");
  EXPECT_EQ(got[1].header.op, kOpShutdown);
  EXPECT_EQ(got[1].header.flags, kShutdownRcv | kShutdownSend);
  // The guest's RST ends it; it had nothing more to say.
  driver_->Send(driver_->Header(52, host_port, kOpRst));
  EXPECT_EQ(device_->connections(), 0u);
  EXPECT_FALSE(driver_->Receive());
}

TEST_F(VsockTest, HostHalfCloseIsShutdownSend) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  shutdown(fd, SHUT_WR);
  Pump();
  std::optional<testing::VsockPacket> sd = driver_->Receive();
  ASSERT_TRUE(sd);
  EXPECT_EQ(sd->header.op, kOpShutdown);
  EXPECT_EQ(sd->header.flags, kShutdownSend);
  // The host still reads.
  driver_->Send(driver_->Header(52, host_port, kOpRw), Bytes("answer"));
  EXPECT_EQ(Read(fd), "answer");
}

TEST_F(VsockTest, GuestShutdownSendIsEofForTheHostAndBothFlagsEndTheStream) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  driver_->Send(driver_->Header(52, host_port, kOpRw), Bytes("bye"));
  vsock::PacketHeader sd = driver_->Header(52, host_port, kOpShutdown);
  sd.flags = kShutdownSend;
  driver_->Send(sd);
  EXPECT_EQ(Read(fd), "bye");
  EXPECT_TRUE(Closed(fd));
  sd.flags = kShutdownRcv;
  driver_->Send(sd);
  std::optional<testing::VsockPacket> rst = driver_->Receive();
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->header.op, kOpRst);
  EXPECT_EQ(device_->connections(), 0u);
}

TEST_F(VsockTest, GuestResetClosesTheHostSocket) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  driver_->Send(driver_->Header(52, host_port, kOpRst));
  EXPECT_TRUE(Closed(fd));
  EXPECT_EQ(device_->connections(), 0u);
  EXPECT_EQ(device_->vsock_counters().conns_removed, 1u);
}

TEST_F(VsockTest, CreditRequestIsAnsweredWithAnUpdate) {
  Start();
  uint32_t host_port = 0;
  ConnectFromHost(52, &host_port);
  driver_->Send(driver_->Header(52, host_port, kOpCreditRequest));
  std::optional<testing::VsockPacket> up = driver_->Receive();
  ASSERT_TRUE(up);
  EXPECT_EQ(up->header.op, kOpCreditUpdate);
  EXPECT_EQ(up->header.buf_alloc, VsockLimits().buf_alloc);
  // A credit update needs no answer.
  driver_->Send(driver_->Header(52, host_port, kOpCreditUpdate));
  EXPECT_FALSE(driver_->Receive());
}

TEST_F(VsockTest, ManyConnectionsAtOnce) {
  Start();
  driver_->AddRxBuffers(200);
  constexpr int kConns = 100;
  std::vector<int> fds;
  for (int i = 0; i < kConns; i++) {
    fds.push_back(HostConnect());
    Write(fds.back(), "CONNECT " + std::to_string(100 + i) + "\n");
  }
  Pump();
  std::map<uint32_t, uint32_t> host_port;  // guest port -> host port
  for (const testing::VsockPacket& p : driver_->ReceiveAll()) {
    ASSERT_EQ(p.header.op, kOpRequest);
    host_port[p.header.dst_port] = p.header.src_port;
  }
  ASSERT_EQ(host_port.size(), size_t{kConns});
  for (auto [guest, host] : host_port) driver_->Send(driver_->Header(guest, host, kOpResponse));
  for (int i = 0; i < kConns; i++) {
    EXPECT_EQ(Read(fds[i]), "OK " + std::to_string(host_port[100 + i]) + "\n");
    Write(fds[i], "from " + std::to_string(i));
  }
  Pump();  // into the 100 buffers the requests left
  std::map<uint32_t, std::string> got;
  for (const testing::VsockPacket& p : driver_->ReceiveAll()) got[p.header.dst_port] += Text(p.payload);
  ASSERT_EQ(got.size(), size_t{kConns});
  for (int i = 0; i < kConns; i++) {
    EXPECT_EQ(got[100 + i], "from " + std::to_string(i));
    driver_->Send(driver_->Header(100 + i, host_port[100 + i], kOpRw), Bytes("to " + std::to_string(i)));
    EXPECT_EQ(Read(fds[i]), "to " + std::to_string(i));
  }
  EXPECT_EQ(device_->connections(), size_t{kConns});
}

TEST_F(VsockTest, MetricsUseFirecrackersNames) {
  Start();
  std::vector<std::pair<std::string, uint64_t>> metrics;
  device_->AppendMetrics(&metrics);
  std::set<std::string> names;
  for (const auto& [name, value] : metrics) names.insert(name);
  for (const char* name : {"rx_bytes_count", "tx_bytes_count", "rx_packets_count",
                           "tx_packets_count", "conns_added", "conns_killed", "conns_removed",
                           "rx_read_fails", "tx_write_fails", "tx_flush_fails", "queue_errors"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
}

TEST_F(VsockTest, AResetDeviceClosesNewHostConnectionsWithoutSpinning) {
  Start();
  uint32_t host_port = 0;
  int fd = ConnectFromHost(52, &host_port);
  // The driver resets the device: on a vCPU thread, which only flags it
  // and fires the timer; the VMM thread's next turn drops the streams.
  driver_->mmio().Write(0x70, 0);
  EXPECT_EQ(testing::BackendWakeups(*transport_, 100), 1);
  EXPECT_TRUE(Closed(fd));
  // Host programs now wait in the backlog; nothing wakes the VMM.
  int waiting = HostConnect();
  Write(waiting, "CONNECT 52\n");
  EXPECT_EQ(testing::BackendWakeups(*transport_, 100), 0);
  // The guest's driver comes back and the connection goes through.
  ASSERT_TRUE(driver_->Init() & kStatusDriverOk);
  driver_->AddRxBuffers(4);
  Pump();
  std::optional<testing::VsockPacket> req = driver_->Receive();
  ASSERT_TRUE(req);
  EXPECT_EQ(req->header.op, kOpRequest);
}

}  // namespace
}  // namespace ember::virtio::vsock
