#include "src/devices/virtio/mmio_transport.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/testing/mmio_driver.h"
#include "src/common/testing/test_images.h"

namespace ember::virtio {
namespace {

constexpr uint64_t kAll = ~0ull;

class MmioTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 1 << 20}}));
    file_ = ember::testing::WriteTempFile(std::vector<uint8_t>(4096, 0));
    auto dev = block::BlockDevice::Create({"disk", file_});
    ASSERT_TRUE(dev.ok()) << dev.status();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
  }
  void TearDown() override { unlink(file_.c_str()); }

  std::unique_ptr<GuestMemory> mem_;
  std::string file_;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_F(MmioTransportTest, IdentifiesAsVirtioMmioVersion2) {
  EXPECT_EQ(driver_->Read(0x000), 0x74726976u);
  EXPECT_EQ(driver_->Read(0x004), 2u);
  EXPECT_EQ(driver_->Read(0x008), block::kDeviceTypeBlock);
  driver_->Write(0x14, 1);
  EXPECT_TRUE(driver_->Read(0x10) & 1) << "VIRTIO_F_VERSION_1 offered";
  driver_->Write(0x30, 0);
  EXPECT_EQ(driver_->Read(0x34), block::kQueueSize);
  driver_->Write(0x30, 7);
  EXPECT_EQ(driver_->Read(0x34), 0u) << "no queue 7";
}

TEST_F(MmioTransportTest, InitSequenceActivatesTheDevice) {
  uint32_t status = driver_->Init(kAll, 16);
  EXPECT_TRUE(status & kStatusDriverOk);
  EXPECT_FALSE(status & kStatusNeedsReset);
}

TEST_F(MmioTransportTest, RefusesADriverWithoutVersion1) {
  uint32_t status = driver_->Init(kAll & ~kFeatureVersion1, 16);
  EXPECT_FALSE(status & kStatusFeaturesOk);
  EXPECT_FALSE(status & kStatusDriverOk);
}

TEST_F(MmioTransportTest, BadQueueSizeNeedsReset) {
  uint32_t status = driver_->Init(kAll, 12);  // not a power of two
  EXPECT_TRUE(status & kStatusNeedsReset);
  EXPECT_FALSE(status & kStatusDriverOk);
  EXPECT_TRUE(driver_->TakeInterrupt()) << "config change interrupt";
  EXPECT_EQ(transport_->device().counters().queue_errors, 1u);
  driver_->Write(0x70, 0);
  EXPECT_EQ(driver_->Read(0x70), 0u) << "reset clears it";
  EXPECT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
}

TEST_F(MmioTransportTest, RingsOutsideMemoryNeedReset) {
  // Place the queue by hand: the test driver would write its rings there.
  driver_->Write(0x70, kStatusAcknowledge | kStatusDriver);
  driver_->Write(0x24, 1);
  driver_->Write(0x20, 1);
  driver_->Write(0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  driver_->Write(0x30, 0);
  driver_->Write(0x38, 16);
  driver_->Write(0x80, 0xfff00000);  // descriptor table far outside 1 MiB
  driver_->Write(0x44, 1);
  driver_->Write(0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_TRUE(driver_->Read(0x70) & kStatusNeedsReset);
}

TEST_F(MmioTransportTest, QueueLayoutIsFrozenOnceReady) {
  ASSERT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
  driver_->Write(0x30, 0);
  driver_->Write(0x38, 2);
  driver_->Write(0x80, 0x1234);
  driver_->Write(0x44, 0);
  EXPECT_EQ(driver_->Read(0x44), 1u) << "cannot turn a queue off after DRIVER_OK";
}

TEST_F(MmioTransportTest, StatusOnlyGrowsAndOddAccessesAreIgnored) {
  driver_->Write(0x70, kStatusAcknowledge | kStatusDriver);
  driver_->Write(0x70, kStatusDriver);  // drops ACKNOWLEDGE: ignored
  EXPECT_EQ(driver_->Read(0x70), kStatusAcknowledge | kStatusDriver);
  uint8_t byte = 0xff;
  transport_->Write(0x70, std::span<const uint8_t>(&byte, 1));
  EXPECT_EQ(driver_->Read(0x70), kStatusAcknowledge | kStatusDriver);
  uint8_t two[2];
  transport_->Read(0x000, two);
  EXPECT_EQ(two[0], 0) << "registers are read 32 bits at a time";
  driver_->Write(0x0f0, 5);  // unknown register
  EXPECT_EQ(driver_->Read(0x0f0), 0u);
}

TEST_F(MmioTransportTest, BrokenQueueNeedsResetAndStopsService) {
  ASSERT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
  testing::DriverQueue& q = driver_->queue(0);
  q.WriteDescriptor(0, 0x40000, 16, kDescFlagNext, 0);  // loops onto itself
  q.Publish(0);
  driver_->Kick(0);
  EXPECT_TRUE(driver_->Read(0x70) & kStatusNeedsReset);
  EXPECT_TRUE(driver_->Read(0x60) & kInterruptConfigChange);
  EXPECT_EQ(transport_->device().counters().queue_errors, 1u);
  driver_->Kick(0);  // ignored now
  EXPECT_EQ(transport_->device().counters().queue_errors, 1u);
}

TEST_F(MmioTransportTest, ConfigSpaceCarriesCapacity) {
  uint8_t cap[8];
  transport_->Read(0x100, cap);
  uint64_t v;
  std::memcpy(&v, cap, 8);
  EXPECT_EQ(v, 8u) << "4096 bytes are 8 sectors";
  uint8_t beyond[4] = {1, 1, 1, 1};
  transport_->Read(0x100 + 500, beyond);
  EXPECT_EQ(beyond[0], 0);
}

}  // namespace
}  // namespace ember::virtio
