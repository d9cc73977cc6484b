// virtio-blk under a rate limiter, through the host-side driver and the
// device's timer as the VMM loop serves it, on the wall clock: what the
// guest gets must keep to the buckets within a stated tolerance.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <map>

#include "src/common/testing/test_images.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/block/request.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::block {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kHeader = 0x80000;
constexpr uint64_t kData = 0x90000;
constexpr uint64_t kStatus = 0xc0000;
constexpr uint32_t kRead = 4096;
// The wall clock of a shared machine: measured rates within 12%.
constexpr double kTolerance = 0.12;

RateLimiterConfig Limit(std::optional<TokenBucketConfig> bandwidth,
                        std::optional<TokenBucketConfig> ops) {
  return {bandwidth, ops};
}

// A PATCH that names both buckets.
RateLimiterUpdate Whole(std::optional<TokenBucketConfig> bandwidth,
                        std::optional<TokenBucketConfig> ops) {
  RateLimiterUpdate u;
  u.bandwidth.emplace(bandwidth);
  u.ops.emplace(ops);
  return u;
}

class BlockLimiterTest : public ::testing::Test {
 protected:
  void Start(std::optional<RateLimiterConfig> limiter) {
    path_ = ember::testing::WriteTempFile(std::vector<uint8_t>(1 << 20, 7));
    DriveConfig config{"disk0", path_};
    config.rate_limiter = limiter;
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 1 << 20}}));
    auto dev = BlockDevice::Create(config);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    ASSERT_TRUE(driver_->Init(~0ull, 64) & kStatusDriverOk);
    ASSERT_TRUE(mem_->WriteObj(kHeader, RequestHeader{kRequestIn, 0, 0}).ok());
  }
  void TearDown() override { unlink(path_.c_str()); }

  // Reads of kRead bytes, all sharing one header, buffer and status byte.
  void Post(int n) {
    for (int i = 0; i < n; i++) {
      driver_->queue(0).Add({{kHeader, 16, false}, {kData, kRead, true}, {kStatus, 1, true}});
    }
    driver_->Kick(0);
  }
  int Collect() {
    int n = 0;
    while (driver_->queue(0).PopUsed()) n++;
    return n;
  }

  struct Run {
    int done = 0;
    int wakeups = 0;
  };
  // For `duration`, keeps 16 reads posted and serves the device's timer as
  // the VMM loop would.
  Run Stream(milliseconds duration) {
    UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
    epoll_event ev = {};
    ev.events = EPOLLIN;
    EXPECT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, device_->timer_fd(), &ev), 0);
    Run run;
    Clock::time_point end = Clock::now() + duration;
    while (Clock::now() < end) {
      if (outstanding < 16) {
        Post(16 - outstanding);
        outstanding = 16;
      }
      int got = Collect();
      run.done += got;
      outstanding -= got;
      if (got > 0) continue;
      // Everything posted waits for the limiter: sleep as the loop would.
      int left = static_cast<int>(
          std::chrono::duration_cast<milliseconds>(end - Clock::now()).count());
      if (left > 0 && epoll_wait(ep.get(), &ev, 1, left) == 1) {
        run.wakeups++;
        transport_->NotifyTimer();
      }
    }
    return run;
  }

  int outstanding = 0;  // posted and not yet used, across Streams
  std::string path_;
  std::unique_ptr<GuestMemory> mem_;
  BlockDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_F(BlockLimiterTest, BandwidthKeepsToTheBucket) {
  // 64 KiB per 100 ms: in 1 s the full bucket (16 reads) and 10 refills.
  Start(Limit(TokenBucketConfig{64 << 10, 100, 0}, std::nullopt));
  Run run = Stream(milliseconds(1000));
  RecordProperty("reads_in_1s_expected_176", run.done);
  EXPECT_NEAR(run.done, 176, 176 * kTolerance);
  std::vector<std::pair<std::string, uint64_t>> out;
  device_->AppendMetrics(&out);
  std::map<std::string, uint64_t> m(out.begin(), out.end());
  EXPECT_GT(m.at("rate_limiter_throttled_events"), 0u);
  EXPECT_GT(m.at("rate_limiter_event_count"), 0u);
  EXPECT_LE(run.wakeups, run.done) << "the timer wakes the loop once per wait, no more";
}

TEST_F(BlockLimiterTest, OpsKeepToTheBucket) {
  // 20 requests per 100 ms, bytes free.
  Start(Limit(std::nullopt, TokenBucketConfig{20, 100, 0}));
  Run run = Stream(milliseconds(1000));
  RecordProperty("reads_in_1s_expected_220", run.done);
  EXPECT_NEAR(run.done, 220, 220 * kTolerance);
}

TEST_F(BlockLimiterTest, OneTimeBurstComesFirst) {
  // 4 KiB a second, with a 16 KiB burst: 5 reads at once, then a wait.
  Start(Limit(TokenBucketConfig{4096, 1000, 16384}, std::nullopt));
  Post(8);
  EXPECT_EQ(Collect(), 5);
  EXPECT_EQ(device_->rate_limiter().bandwidth()->one_time_burst(), 0u);
}

TEST_F(BlockLimiterTest, AParkedQueueDoesNotSpin) {
  // One read per 400 ms: the first goes, the rest wait for the timer.
  Start(Limit(std::nullopt, TokenBucketConfig{1, 400, 0}));
  Post(3);
  EXPECT_EQ(Collect(), 1);
  for (int i = 0; i < 100; i++) driver_->Kick(0);  // a guest kicking while it waits
  EXPECT_EQ(Collect(), 0) << "no request skips the limiter";
  EXPECT_EQ(testing::TimerWakeups(*transport_, 20, 10), 0) << "the loop sleeps meanwhile";
  EXPECT_EQ(testing::TimerWakeups(*transport_, 1, 1000), 1) << "then one wakeup";
  EXPECT_EQ(Collect(), 1) << "serves the next read";
}

TEST_F(BlockLimiterTest, ALimiterChangedMidStreamAndRemoved) {
  Start(Limit(TokenBucketConfig{32 << 10, 100, 0}, std::nullopt));  // 320 KiB/s
  Run slow = Stream(milliseconds(500));
  EXPECT_NEAR(slow.done, 8 + 40, 48 * kTolerance);
  // PATCH: four times the rate (a fresh, full bucket).
  transport_->WithDevice([](VirtioDevice& d) {
    static_cast<BlockDevice&>(d).UpdateRateLimiter(
        Whole(TokenBucketConfig{128 << 10, 100, 0}, std::nullopt));
    return 0;
  });
  Run fast = Stream(milliseconds(500));
  RecordProperty("slow_expected_48", slow.done);
  RecordProperty("fast_expected_192", fast.done);
  EXPECT_NEAR(fast.done, 32 + 160, 192 * kTolerance);
  // PATCH removing it: what waits goes at once.
  transport_->WithDevice([](VirtioDevice& d) {
    static_cast<BlockDevice&>(d).UpdateRateLimiter(Whole(std::nullopt, std::nullopt));
    return 0;
  });
  EXPECT_FALSE(device_->rate_limiter().enabled());
  Run free = Stream(milliseconds(100));
  EXPECT_GT(free.done, 1000) << "no limit any more";
}

TEST_F(BlockLimiterTest, AResetDisarmsTheTimer) {
  Start(Limit(std::nullopt, TokenBucketConfig{1, 300, 0}));
  Post(2);
  EXPECT_EQ(Collect(), 1);
  driver_->Write(0x70, 0);
  EXPECT_EQ(testing::TimerWakeups(*transport_, 1, 500), 0);
}

}  // namespace
}  // namespace ember::virtio::block
