#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/backend_loop.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "absl/strings/str_split.h"
#include "src/common/log.h"

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

TEST_F(MmioTransportTest, ARestoredDeviceLooksAtEveryReadyQueueOnce) {
  // A notification the old VMM had not read is gone with its eventfds, and
  // a driver using EVENT_IDX does not give it again.
  ASSERT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
  MmioTransport::State saved = transport_->SaveState();
  auto dev = block::BlockDevice::Create({"disk", file_});
  ASSERT_TRUE(dev.ok()) << dev.status();
  MmioTransport restored(std::move(*dev), mem_.get(), UniqueFd(eventfd(0, EFD_NONBLOCK)));
  std::vector<uint32_t> notified;
  restored.set_notify_fallback([&](uint32_t q) { notified.push_back(q); });
  ASSERT_TRUE(restored.RestoreState(saved).ok());
  EXPECT_EQ(notified, std::vector<uint32_t>{0});
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

// A device with one queue and a level-triggered backend (an eventfd, as
// block's io_uring completions), that counts what the transport asks of it.
class EventFdDevice : public VirtioDevice {
 public:
  EventFdDevice() : backend_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  uint32_t device_type() const override { return 42; }
  uint64_t features() const override { return kFeatureVersion1; }
  std::vector<uint16_t> queue_max_sizes() const override { return {16}; }
  void ReadConfig(uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0);
  }
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt*,
                        uint64_t) override {
    mem_ = &mem;
    queues_ = queues;
    return absl::OkStatus();
  }
  void ProcessQueue(size_t index) override { (void)queues_[index].Pop(*mem_); }
  void Reset() override { mem_ = nullptr; }
  int backend_fd() const override { return backend_.get(); }
  uint32_t backend_events() const override { return EPOLLIN; }
  void ProcessBackend(uint32_t) override {
    processed++;
    uint64_t count;
    (void)!::read(backend_.get(), &count, sizeof(count));
  }
  std::string metrics_name() const override { return "fake"; }

  // Host I/O completes: the fd becomes ready.
  void Complete() {
    uint64_t one = 1;
    ASSERT_EQ(::write(backend_.get(), &one, sizeof(one)), 8);
  }
  int processed = 0;

 private:
  UniqueFd backend_;
  const GuestMemory* mem_ = nullptr;
  std::span<Queue> queues_;
};


class MmioTransportBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 1 << 20}}));
    auto dev = std::make_unique<EventFdDevice>();
    device_ = dev.get();
    transport_ = std::make_unique<MmioTransport>(std::move(dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
  }

  std::unique_ptr<GuestMemory> mem_;
  EventFdDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_F(MmioTransportBackendTest, ServesTheBackendOfAnActiveDevice) {
  ASSERT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
  device_->Complete();
  EXPECT_EQ(testing::BackendWakeups(*transport_), 1);
  EXPECT_EQ(device_->processed, 1);
}

TEST_F(MmioTransportBackendTest, ABrokenQueueCannotMakeTheLoopSpin) {
  ASSERT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
  testing::DriverQueue& q = driver_->queue(0);
  q.WriteDescriptor(0, 0x40000, 16, kDescFlagNext, 0);  // loops onto itself
  q.Publish(0);
  driver_->Kick(0);
  ASSERT_TRUE(driver_->Read(0x70) & kStatusNeedsReset);
  device_->Complete();  // I/O that was in flight completes
  EXPECT_EQ(testing::BackendWakeups(*transport_), 1) << "the readiness is consumed";
  EXPECT_EQ(device_->processed, 0) << "a device that needs reset is not served";
}

TEST_F(MmioTransportBackendTest, AResetCannotMakeTheLoopSpin) {
  ASSERT_TRUE(driver_->Init(kAll, 16) & kStatusDriverOk);
  device_->Complete();
  driver_->Write(0x70, 0);  // reset with the completion unread
  EXPECT_EQ(testing::BackendWakeups(*transport_), 1);
  device_->Complete();  // and before the driver ever sets DRIVER_OK again
  EXPECT_EQ(testing::BackendWakeups(*transport_), 1);
  EXPECT_EQ(device_->processed, 0);
}

// Lines written while it lives go to a memory file instead of stderr.
std::vector<std::string> LogLinesOf(const std::function<void()>& f) {
  UniqueFd fd(memfd_create("log", MFD_CLOEXEC));
  SetLogSink(fd.get());
  f();
  SetLogSink(-1);
  std::string text(static_cast<size_t>(lseek(fd.get(), 0, SEEK_END)), '\0');
  EXPECT_EQ(pread(fd.get(), text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST_F(MmioTransportBackendTest, AGuestCannotFloodTheLog) {
  // Reset, then DRIVER_OK with a queue size that is not a power of two,
  // in a loop: each time the device needs reset again.
  std::vector<std::string> lines = LogLinesOf([&] {
    for (int i = 0; i < 2000; i++) {
      ASSERT_TRUE(driver_->Init(kAll, 12) & kStatusNeedsReset);
    }
  });
  EXPECT_EQ(transport_->device().counters().queue_errors, 2000u) << "all counted";
  EXPECT_LE(lines.size(), LogRateLimiter::kBurst);
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines[0].find("needs reset"), std::string::npos) << lines[0];
}

}  // namespace
}  // namespace ember::virtio
