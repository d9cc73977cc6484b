// virtio-rng through the host-side driver.
#include "src/devices/virtio/rng/entropy_device.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::rng {
namespace {

using testing::Buffer;
using testing::TimerWakeups;

constexpr uint64_t kBuf = 0x100000;
constexpr uint8_t kSentinel = 0xa5;

// Armed, or expired and not yet read.
bool TimerPending(const EntropyDevice& device) {
  itimerspec now = {};
  EXPECT_EQ(timerfd_gettime(device.timer_fd(), &now), 0);
  pollfd p = {device.timer_fd(), POLLIN, 0};
  return now.it_value.tv_sec != 0 || now.it_value.tv_nsec != 0 || poll(&p, 1, 0) == 1;
}

class EntropyDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 8 << 20}}));
    auto dev = EntropyDevice::Create({});
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    ASSERT_TRUE(driver_->Init(~0ull, 256) & kStatusDriverOk);
  }

  void Mark(uint64_t addr, size_t len) {
    ASSERT_TRUE(mem_->Write(addr, std::vector<uint8_t>(len, kSentinel)).ok());
  }
  // How many of the bytes at `addr` differ from the sentinel.
  size_t Changed(uint64_t addr, size_t len) {
    std::vector<uint8_t> bytes(len);
    EXPECT_TRUE(mem_->Read(addr, bytes).ok());
    return static_cast<size_t>(std::count_if(bytes.begin(), bytes.end(),
                                              [](uint8_t b) { return b != kSentinel; }));
  }
  std::optional<testing::UsedElement> Request(const std::vector<Buffer>& buffers) {
    for (const Buffer& b : buffers) Mark(b.addr, b.len);
    driver_->queue(0).Add(buffers);
    driver_->Kick(0);
    return driver_->queue(0).PopUsed();
  }

  std::unique_ptr<GuestMemory> mem_;
  EntropyDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_F(EntropyDeviceTest, OffersOneQueueAndNoConfig) {
  EXPECT_EQ(driver_->Read(0x08), kDeviceTypeRng);
  driver_->Write(0x30, 0);
  EXPECT_EQ(driver_->Read(0x34), kQueueSize);
  driver_->Write(0x30, 1);
  EXPECT_EQ(driver_->Read(0x34), 0u) << "one queue only";
  uint8_t cfg[8];
  transport_->Read(0x100, cfg);
  EXPECT_TRUE(std::all_of(std::begin(cfg), std::end(cfg), [](uint8_t b) { return b == 0; }));
}

TEST_F(EntropyDeviceTest, RandomBytesArrive) {
  auto used = Request({{kBuf, 64, true}});
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 64u);
  EXPECT_GT(Changed(kBuf, 64), 48u) << "random bytes, not the sentinel";
  std::vector<uint8_t> first(64), second(64);
  ASSERT_TRUE(mem_->Read(kBuf, first).ok());
  ASSERT_TRUE(Request({{kBuf, 64, true}}));
  ASSERT_TRUE(mem_->Read(kBuf, second).ok());
  EXPECT_NE(first, second);
  EXPECT_EQ(device_->entropy_counters().entropy_event_count, 2u);
  EXPECT_EQ(device_->entropy_counters().entropy_bytes, 128u);
  EXPECT_TRUE(driver_->TakeInterrupt());
}

TEST_F(EntropyDeviceTest, ChainsOfOddSizesAreFilledWhole) {
  Mark(kBuf, 0x2000);
  auto used = Request({{kBuf, 1, true}, {kBuf + 0x100, 7, true}, {kBuf + 0x1000, 4093, true}});
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 4101u);
  EXPECT_GT(Changed(kBuf + 0x100, 7), 0u);
  EXPECT_GT(Changed(kBuf + 0x1000, 4093), 4000u);
  EXPECT_EQ(Changed(kBuf + 0x1000 + 4093, 3), 0u) << "nothing past the buffer";
  ASSERT_TRUE(Request({{kBuf, 0, true}}));  // an empty buffer gets nothing
}

TEST_F(EntropyDeviceTest, ARequestGetsAtMost64KiB) {
  Mark(kBuf, 128 << 10);
  auto used = Request({{kBuf, 100 << 10, true}});
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, kMaxBytesPerRequest);
  EXPECT_EQ(Changed(kBuf + kMaxBytesPerRequest, (100 << 10) - kMaxBytesPerRequest), 0u);
}

TEST_F(EntropyDeviceTest, ReadOnlyBuffersAreRefusedAndCounted) {
  auto used = Request({{kBuf, 32, true}, {kBuf + 0x100, 32, false}});
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(Changed(kBuf, 32), 0u) << "nothing written into a refused request";
  EXPECT_EQ(device_->entropy_counters().entropy_event_fails, 1u);
  EXPECT_EQ(device_->counters().request_errors, 1u);
  EXPECT_FALSE(transport_->status() & kStatusNeedsReset);
  used = Request({{kBuf, 32, true}});
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 32u) << "the next request is served";
}

TEST_F(EntropyDeviceTest, ManyLargeBuffersAreServedOverSeveralTurns) {
  // 32 requests of 64 KiB: 2 MiB, twice what one turn of the loop serves.
  for (int i = 0; i < 32; i++) driver_->queue(0).Add({{kBuf + (uint64_t(i) << 16), 1 << 16, true}});
  driver_->Kick(0);
  EXPECT_EQ(device_->entropy_counters().entropy_bytes, kMaxBytesPerRun);
  EXPECT_TRUE(TimerPending(*device_)) << "the rest waits for the next turn";
  EXPECT_EQ(TimerWakeups(*transport_, 10, 10), 2) << "one turn for the rest, one for the empty ring";
  EXPECT_EQ(device_->entropy_counters().entropy_bytes, 2u << 20);
  int used = 0;
  while (driver_->queue(0).PopUsed()) used++;
  EXPECT_EQ(used, 32);
  EXPECT_FALSE(TimerPending(*device_));
}

TEST_F(EntropyDeviceTest, AResetStopsWorkLeftForLater) {
  for (int i = 0; i < 20; i++) driver_->queue(0).Add({{kBuf + (uint64_t(i) << 16), 1 << 16, true}});
  driver_->Kick(0);
  ASSERT_TRUE(TimerPending(*device_));
  driver_->Write(0x70, 0);
  EXPECT_FALSE(TimerPending(*device_));
  EXPECT_EQ(TimerWakeups(*transport_, 5, 5), 0);
}

TEST_F(EntropyDeviceTest, ABrokenQueueNeedsResetAndDoesNotSpin) {
  testing::DriverQueue& q = driver_->queue(0);
  q.WriteDescriptor(0, kBuf, 16, kDescFlagNext | kDescFlagWrite, 0);  // loops onto itself
  q.Publish(0);
  driver_->Kick(0);
  EXPECT_TRUE(transport_->status() & kStatusNeedsReset);
  EXPECT_EQ(device_->counters().queue_errors, 1u);
  EXPECT_EQ(TimerWakeups(*transport_, 5, 5), 0);
  // A guest address outside memory after a reset: also a broken queue.
  ASSERT_TRUE(driver_->Init(~0ull, 256) & kStatusDriverOk);
  driver_->queue(0).Add({{(8 << 20) - 8, 64, true}});
  driver_->Kick(0);
  EXPECT_TRUE(transport_->status() & kStatusNeedsReset);
}

TEST_F(EntropyDeviceTest, ARestoredDeviceServesWhatWasWaiting) {
  // A request the guest posted (and kicked) that the device had not served
  // when the snapshot was taken: on restore nobody kicks again.
  driver_->queue(0).Add({{kBuf, 32, true}});
  MmioTransport::State saved = transport_->SaveState();
  auto dev = EntropyDevice::Create({});
  ASSERT_TRUE(dev.ok());
  EntropyDevice* restored = dev->get();
  MmioTransport again(std::move(*dev), mem_.get(), UniqueFd(eventfd(0, EFD_NONBLOCK)));
  ASSERT_TRUE(again.RestoreState(saved).ok());
  EXPECT_EQ(TimerWakeups(again, 10, 10), 1);
  EXPECT_EQ(restored->entropy_counters().entropy_bytes, 32u);
  saved.device = {1};
  EXPECT_FALSE(again.RestoreState(saved).ok()) << "a truncated state";
  saved.device = {};
  EXPECT_TRUE(again.RestoreState(saved).ok()) << "an older Ember's, without the limiter";
}

TEST(EntropyLimiterTest, ARestoredDeviceHasTheTokensItsSnapshotHad) {
  // As Firecracker: a snapshot does not hand each restored clone a full
  // bucket and a fresh one-time burst.
  auto mem = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 4 << 20}}));
  EntropyConfig config;
  config.rate_limiter = RateLimiterConfig{TokenBucketConfig{1024, 60000, 512}, std::nullopt};
  auto make = [&]() {
    auto dev = EntropyDevice::Create(config);
    EXPECT_TRUE(dev.ok());
    return std::make_unique<MmioTransport>(std::move(*dev), mem.get(),
                                           UniqueFd(eventfd(0, EFD_NONBLOCK)));
  };
  std::unique_ptr<MmioTransport> first = make();
  testing::MmioDriver driver(*first, *mem, 0x10000);
  ASSERT_TRUE(driver.Init(~0ull, 16) & kStatusDriverOk);
  driver.queue(0).Add({{kBuf, 1024, true}});
  driver.Kick(0);
  auto& device = static_cast<EntropyDevice&>(first->device());
  ASSERT_EQ(device.entropy_counters().entropy_bytes, 1024u) << "the burst, then half the bucket";
  MmioTransport::State saved = first->SaveState();

  std::unique_ptr<MmioTransport> again = make();
  ASSERT_TRUE(again->RestoreState(saved).ok());
  const RateLimiter& limiter = static_cast<EntropyDevice&>(again->device()).rate_limiter();
  EXPECT_EQ(limiter.bandwidth()->one_time_burst(), 0u);
  EXPECT_NEAR(static_cast<double>(limiter.bandwidth()->budget()), 512, 1);
}

TEST(EntropyLimiterTest, BytesWaitForTheBucketAndAreNeverDropped) {
  // 1 KiB per 100 ms; five 512-byte requests: two at once, the rest one
  // per 50 ms, each on one timer wakeup.
  auto mem = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 4 << 20}}));
  EntropyConfig config;
  config.rate_limiter = RateLimiterConfig{TokenBucketConfig{1024, 100, 0}, std::nullopt};
  auto dev = EntropyDevice::Create(config);
  ASSERT_TRUE(dev.ok());
  EntropyDevice* device = dev->get();
  MmioTransport transport(std::move(*dev), mem.get(), UniqueFd(eventfd(0, EFD_NONBLOCK)));
  testing::MmioDriver driver(transport, *mem, 0x10000);
  ASSERT_TRUE(driver.Init(~0ull, 16) & kStatusDriverOk);
  for (int i = 0; i < 5; i++) driver.queue(0).Add({{kBuf + 0x1000 * i, 512, true}});
  driver.Kick(0);
  EXPECT_EQ(device->entropy_counters().entropy_bytes, 1024u);
  EXPECT_EQ(device->entropy_counters().entropy_rate_limiter_throttled, 1u);
  for (int i = 0; i < 10; i++) driver.Kick(0);
  EXPECT_EQ(device->entropy_counters().entropy_bytes, 1024u) << "kicks do not get past it";
  auto start = std::chrono::steady_clock::now();
  int wakeups = TimerWakeups(transport, 3, 200);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(device->entropy_counters().entropy_bytes, 2560u);
  EXPECT_EQ(wakeups, 3);
  EXPECT_NEAR(ms, 150, 30) << "three waits of 50 ms";
  int used = 0;
  while (driver.queue(0).PopUsed()) used++;
  EXPECT_EQ(used, 5);
}

TEST_F(EntropyDeviceTest, MetricsUseFirecrackersNames) {
  ASSERT_TRUE(Request({{kBuf, 10, true}}));
  std::vector<std::pair<std::string, uint64_t>> out;
  device_->AppendMetrics(&out);
  std::map<std::string, uint64_t> m(out.begin(), out.end());
  EXPECT_EQ(device_->metrics_name(), "entropy");
  EXPECT_EQ(m.at("entropy_event_count"), 1u);
  EXPECT_EQ(m.at("entropy_bytes"), 10u);
  EXPECT_EQ(m.at("entropy_event_fails"), 0u);
  EXPECT_EQ(m.at("host_rng_fails"), 0u);
  EXPECT_EQ(m.at("entropy_rate_limiter_throttled"), 0u);
  EXPECT_EQ(m.at("rate_limiter_event_count"), 0u);
}

}  // namespace
}  // namespace ember::virtio::rng
