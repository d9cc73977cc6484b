// virtio-balloon's own snapshot state (SaveDeviceState's bytes) and a
// whole transport's State, saved from a driven device and restored onto
// a fresh one.
#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include "src/common/byte_codec.h"
#include "src/devices/virtio/balloon/balloon_device.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::balloon {
namespace {

std::unique_ptr<BalloonDevice> Make(uint32_t stats_interval_s, bool hinting = true) {
  auto dev = BalloonDevice::Create({/*amount_mib=*/2, /*deflate_on_oom=*/true, stats_interval_s,
                                    hinting, /*free_page_reporting=*/true});
  EXPECT_TRUE(dev.ok()) << dev.status();
  return std::move(*dev);
}

// Version 1's fields; version 2 adds hinting's (host command, guest
// command if any, last run id, acknowledge on stop).
std::vector<uint8_t> Saved(uint16_t version, uint32_t target, uint32_t actual, uint8_t has_head,
                           uint16_t head, uint32_t host_cmd = 0, uint8_t has_guest = 0,
                           uint32_t guest_cmd = 0, uint32_t last_run = 1, uint8_t ack = 0) {
  ByteWriter w;
  w.U16(version);
  w.U32(target);
  w.U32(actual);
  w.U8(has_head);
  w.U16(head);
  if (version >= 2) {
    w.U32(host_cmd);
    w.U8(has_guest);
    w.U32(guest_cmd);
    w.U32(last_run);
    w.U8(ack);
  }
  return w.Take();
}

TEST(BalloonState, EncodesEachFieldAfterItsVersion) {
  EXPECT_EQ(Make(1)->SaveDeviceState(),
            (std::vector<uint8_t>{2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                  0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}))
      << "version 2, 512 pages targeted, none reported, no statistics buffer, hinting stopped, "
         "no guest command, no run yet, no acknowledging";
}

TEST(BalloonState, RoundTrips) {
  std::vector<uint8_t> saved = Saved(2, 0x01020304, 0x05060708, 1, 0x42, 7, 1, 7, 7, 1);
  std::unique_ptr<BalloonDevice> dev = Make(1);
  ASSERT_TRUE(dev->RestoreDeviceState(saved).ok());
  EXPECT_EQ(dev->target_pages(), 0x01020304u);
  EXPECT_EQ(dev->actual_pages(), 0x05060708u);
  EXPECT_EQ(dev->hinting_status()->host_cmd, 7u);
  EXPECT_EQ(dev->hinting_status()->guest_cmd, 7u);
  EXPECT_EQ(dev->SaveDeviceState(), saved) << "the statistics buffer and hinting too";
}

TEST(BalloonState, VersionOneStillLoads) {
  std::unique_ptr<BalloonDevice> dev = Make(1);
  ASSERT_TRUE(dev->RestoreDeviceState(Saved(1, 9, 8, 1, 0x42)).ok());
  EXPECT_EQ(dev->actual_pages(), 8u);
  EXPECT_EQ(dev->hinting_status()->host_cmd, kHintCmdStop);
  EXPECT_FALSE(dev->hinting_status()->guest_cmd);
  EXPECT_EQ(dev->SaveDeviceState(), Saved(2, 9, 8, 1, 0x42));
}

TEST(BalloonState, MalformedInputIsRefusedAndChangesNothing) {
  std::unique_ptr<BalloonDevice> dev = Make(1);
  std::vector<uint8_t> before = dev->SaveDeviceState();
  std::vector<uint8_t> saved = Saved(2, 7, 8, 1, 9, 3, 1, 3, 3, 1);
  for (size_t n = 0; n < saved.size(); n++) {
    absl::Status st = dev->RestoreDeviceState(std::span(saved.data(), n));
    EXPECT_NE(st.message().find("virtio-balloon state: truncated"), std::string::npos) << st;
  }
  saved.push_back(0);
  EXPECT_NE(dev->RestoreDeviceState(saved).message().find("left over"), std::string::npos);
  absl::Status st = dev->RestoreDeviceState(Saved(3, 7, 8, 1, 9));
  EXPECT_EQ(st.message(), "virtio-balloon state version 3; this Ember reads versions 1 and 2");
  st = Make(1, /*hinting=*/false)->RestoreDeviceState(Saved(2, 7, 8, 0, 0, 5, 1, 5));
  EXPECT_NE(st.message().find("hinting is off"), std::string::npos) << st;
  st = dev->RestoreDeviceState(Saved(2, 7, 8, 0, 0, 0, 0, 0, /*last_run=*/0));
  EXPECT_NE(st.message().find("run id 0"), std::string::npos) << st;
  st = dev->RestoreDeviceState(Saved(1, 7, 8, 2, 9));
  EXPECT_NE(st.message().find("not a bool"), std::string::npos) << st;
  st = dev->RestoreDeviceState(Saved(1, 7, 8, 1, kQueueSize));
  EXPECT_NE(st.message().find("beyond the queue"), std::string::npos) << st;
  st = Make(0)->RestoreDeviceState(Saved(1, 7, 8, 1, 9));
  EXPECT_NE(st.message().find("statistics are off"), std::string::npos) << st;
  EXPECT_EQ(dev->SaveDeviceState(), before);
}

TEST(BalloonState, TransportStateRoundTripsOntoAFreshDevice) {
  GuestMemory mem = *GuestMemory::Create({{0, 4 << 20}});
  MmioTransport first(Make(1), &mem, UniqueFd(eventfd(0, EFD_NONBLOCK)));
  testing::MmioDriver driver(first, mem, 0x10000);
  ASSERT_TRUE(driver.Init(~0ull, 16) & kStatusDriverOk);
  uint32_t reported = 300;
  first.Write(0x104, std::span(reinterpret_cast<const uint8_t*>(&reported), 4));
  MmioTransport::State saved = first.SaveState();
  ASSERT_TRUE(saved.registers.activated);

  ByteWriter w;
  saved.Encode(w);
  ByteReader r(w.bytes());
  MmioTransport::State decoded;
  decoded.Decode(r);
  ASSERT_TRUE(r.Finish("transport").ok()) << r.Finish("transport");
  EXPECT_EQ(decoded, saved);

  MmioTransport second(Make(1), &mem, UniqueFd(eventfd(0, EFD_NONBLOCK)));
  ASSERT_TRUE(second.RestoreState(decoded).ok());
  EXPECT_EQ(second.SaveState(), saved);
  EXPECT_EQ(second.status(), first.status());
}

}  // namespace
}  // namespace ember::virtio::balloon
