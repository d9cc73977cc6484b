// virtio-vsock's snapshot state: its encoding, malformed input refused,
// and a restored device (on another uds_path, as vsock_override makes it)
// telling the guest TRANSPORT_RESET before anything else.
#include "src/common/byte_codec.h"
#include "src/devices/virtio/vsock/vsock_test_fixture.h"

namespace ember::virtio::vsock {
namespace {

std::vector<uint8_t> Saved(uint16_t version, uint64_t cid, uint32_t port_last) {
  ByteWriter w;
  w.U16(version);
  w.U64(cid);
  w.U32(port_last);
  return w.Take();
}

TEST_F(VsockTest, StateIsTheCidAndLastPortAfterItsVersion) {
  Start();
  EXPECT_EQ(device_->SaveDeviceState(), Saved(1, kGuestCid, (1u << 30) - 1));
  uint32_t host_port = 0;
  ConnectFromHost(52, &host_port);
  EXPECT_EQ(device_->SaveDeviceState(), Saved(1, kGuestCid, host_port));
}

TEST_F(VsockTest, MalformedStateIsRefused) {
  Start();
  std::vector<uint8_t> saved = Saved(1, kGuestCid, 5);
  for (size_t n = 0; n < saved.size(); n++) {
    absl::Status st = device_->RestoreDeviceState(std::span(saved.data(), n));
    EXPECT_NE(st.message().find("virtio-vsock state: truncated"), std::string::npos) << st;
  }
  saved.push_back(0);
  EXPECT_NE(device_->RestoreDeviceState(saved).message().find("left over"), std::string::npos);
  EXPECT_EQ(device_->RestoreDeviceState(Saved(2, kGuestCid, 5)).message(),
            "virtio-vsock state version 2; this Ember reads version 1");
  EXPECT_EQ(device_->RestoreDeviceState(Saved(1, 7, 5)).message(),
            "virtio-vsock state: guest CID 7, but the device has CID 3");
  EXPECT_EQ(device_->vsock_counters().transport_resets, 0u);
}

TEST_F(VsockTest, ARestoredDeviceResetsTheGuestsStreamsFirst) {
  Start();
  for (int i = 0; i < 8; i++) driver_->AddEventBuffer();  // as many as Linux gives
  uint32_t host_port = 0;
  ConnectFromHost(52, &host_port);
  MmioTransport::State saved = transport_->SaveState();
  ASSERT_TRUE(saved.registers.activated);
  EXPECT_FALSE(driver_->ReceiveEvent()) << "no event while running";

  // The new VMM, on another path; the old one is still there.
  std::string moved = dir_ + "/moved.sock";
  auto dev = VsockDevice::Create({"vsock0", kGuestCid, moved});
  ASSERT_TRUE(dev.ok()) << dev.status();
  VsockDevice* restored = dev->get();
  MmioTransport second(std::move(*dev), mem_.get(), UniqueFd(eventfd(0, EFD_NONBLOCK)));
  ASSERT_TRUE(second.RestoreState(saved).ok());
  EXPECT_EQ(restored->config().uds_path, moved);
  EXPECT_EQ(restored->vsock_counters().transport_resets, 1u);
  EXPECT_EQ(driver_->ReceiveEvent(), std::optional<uint32_t>(kEventTransportReset));
  EXPECT_EQ(restored->SaveDeviceState(), Saved(1, kGuestCid, host_port));

  // Until the guest has taken the event, nothing reaches its receive
  // queue; a notification of the event queue without a buffer back (the
  // transport's replay after a restore) is no ack either.
  int fd = HostConnect(moved);
  Write(fd, "CONNECT 52\n");
  Pump(second);
  second.Notify(kRxQueue);
  second.Notify(kEventQueue);
  EXPECT_FALSE(driver_->Receive());
  // The guest gives the buffer back, its ack. It still had 7 buffers out,
  // so it notifies only because the reset asked it to (EVENT_IDX); that
  // notification alone brings the waiting request: nothing else would
  // come before the host program gives up.
  testing::DriverQueue& ev = driver_->mmio().queue(kEventQueue);
  uint16_t old_idx = ev.avail_idx();
  driver_->AddEventBuffer(8, /*kick=*/false);
  ASSERT_TRUE(ev.KickNeeded(old_idx)) << "the guest's ack would go unheard";
  second.Notify(kEventQueue);
  std::optional<testing::VsockPacket> req = driver_->Receive();
  ASSERT_TRUE(req);
  EXPECT_EQ(req->header.op, kOpRequest);
  EXPECT_EQ(req->header.src_port, host_port + 1) << "ports go on where they were";
}

TEST_F(VsockTest, ADeviceNoDriverStartedComesBackOwingNoReset) {
  MmioTransport::State saved;
  {
    auto dev = VsockDevice::Create({"vsock0", kGuestCid, uds_});
    ASSERT_TRUE(dev.ok()) << dev.status();
    MmioTransport first(std::move(*dev), mem_.get(), UniqueFd(eventfd(0, EFD_NONBLOCK)));
    saved = first.SaveState();
  }
  ASSERT_FALSE(saved.registers.activated);
  auto dev = VsockDevice::Create({"vsock0", kGuestCid, uds_});
  ASSERT_TRUE(dev.ok()) << dev.status();
  device_ = dev->get();
  transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                               UniqueFd(eventfd(0, EFD_NONBLOCK)));
  // Its state is read too, with no driver: another CID is refused.
  MmioTransport::State other = saved;
  other.device = Saved(1, 7, 5);
  EXPECT_FALSE(transport_->RestoreState(other).ok());
  ASSERT_TRUE(transport_->RestoreState(saved).ok());
  // The guest's driver starts after the restore, with no streams to
  // reset, and gets no reset event.
  driver_ = std::make_unique<testing::VsockDriver>(*transport_, *mem_, kGuestCid);
  ASSERT_TRUE(driver_->Init(256) & kStatusDriverOk);
  for (int i = 0; i < 8; i++) driver_->AddEventBuffer();
  uint32_t host_port = 0;
  ConnectFromHost(52, &host_port);
  EXPECT_NE(host_port, 0u);
  EXPECT_FALSE(driver_->ReceiveEvent());
  EXPECT_EQ(device_->vsock_counters().transport_resets, 0u);
}

TEST_F(VsockTest, TheResetWaitsForAnEventBuffer) {
  Start();
  MmioTransport::State saved = transport_->SaveState();
  transport_.reset();  // frees uds_path
  auto dev = VsockDevice::Create({"vsock0", kGuestCid, uds_});
  ASSERT_TRUE(dev.ok()) << dev.status();
  VsockDevice* restored = dev->get();
  transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                               UniqueFd(eventfd(0, EFD_NONBLOCK)));
  ASSERT_TRUE(transport_->RestoreState(saved).ok());
  EXPECT_EQ(restored->vsock_counters().transport_resets, 0u);
  // The rings are in guest memory: the buffer is given there, and the
  // new transport notified.
  testing::DriverQueue& ev = driver_->mmio().queue(kEventQueue);
  ev.Add({{testing::VsockDriver::kEventArea, 8, true}});
  transport_->Notify(kEventQueue);
  EXPECT_EQ(restored->vsock_counters().transport_resets, 1u);
  EXPECT_EQ(*mem_->ReadObj<uint32_t>(testing::VsockDriver::kEventArea), kEventTransportReset);
}

}  // namespace
}  // namespace ember::virtio::vsock
