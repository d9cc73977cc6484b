#include "src/devices/virtio/balloon/balloon_device.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::balloon {
namespace {

constexpr uint64_t kPfnList = 0x80000;
constexpr uint64_t kStats = 0x90000;

using testing::BackendWakeups;

bool TimerArmed(const BalloonDevice& device) {
  itimerspec now = {};
  EXPECT_EQ(timerfd_gettime(device.backend_fd(), &now), 0);
  return now.it_value.tv_sec != 0 || now.it_value.tv_nsec != 0;
}

// A balloon behind its transport in 4 MiB of guest memory, its driver
// started with every feature.
class BalloonFixture : public ::testing::Test {
 protected:
  void Start(const BalloonConfig& config) {
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 4 << 20}}));
    auto dev = BalloonDevice::Create(config);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    ASSERT_TRUE(driver_->Init(~0ull, 16) & kStatusDriverOk);
  }

  std::unique_ptr<GuestMemory> mem_;
  BalloonDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

class BalloonDeviceTest : public BalloonFixture {
 protected:
  void SetUp() override {
    Start({/*amount_mib=*/2, /*deflate_on_oom=*/true, /*stats_polling_interval_s=*/1});
  }
  void SendPfns(size_t queue, const std::vector<uint32_t>& pfns) {
    for (size_t i = 0; i < pfns.size(); i++) {
      ASSERT_TRUE(mem_->WriteObj(kPfnList + 4 * i, pfns[i]).ok());
    }
    driver_->queue(queue).Add({{kPfnList, static_cast<uint32_t>(4 * pfns.size()), false}});
    driver_->Kick(static_cast<uint32_t>(queue));
    EXPECT_TRUE(driver_->queue(queue).PopUsed());
  }
};

TEST_F(BalloonDeviceTest, ConfigCarriesTargetAndActual) {
  uint8_t cfg[8];
  transport_->Read(0x100, cfg);
  uint32_t target, actual;
  std::memcpy(&target, cfg, 4);
  std::memcpy(&actual, cfg + 4, 4);
  EXPECT_EQ(target, 512u) << "2 MiB of 4 KiB pages";
  EXPECT_EQ(actual, 0u);
  uint32_t reported = 300;
  transport_->Write(0x104, std::span(reinterpret_cast<const uint8_t*>(&reported), 4));
  EXPECT_EQ(device_->actual_pages(), 300u);
  transport_->Write(0x100, std::span(reinterpret_cast<const uint8_t*>(&reported), 4));
  EXPECT_EQ(device_->target_pages(), 512u) << "the target is the host's";
  driver_->Write(0x14, 0);
  EXPECT_TRUE(driver_->Read(0x10) & kFeatureDeflateOnOom);
  EXPECT_TRUE(driver_->Read(0x10) & kFeatureStatsVq);
}

TEST_F(BalloonDeviceTest, TargetChangesReachARunningGuest) {
  driver_->TakeInterrupt();
  device_->SetTarget(3);
  EXPECT_EQ(driver_->Read(0x60), kInterruptConfigChange);
  EXPECT_TRUE(driver_->TakeInterrupt());
  uint8_t cfg[4];
  transport_->Read(0x100, cfg);
  uint32_t target;
  std::memcpy(&target, cfg, 4);
  EXPECT_EQ(target, 768u);
}

TEST_F(BalloonDeviceTest, StatsIntervalChangesButStatsStayOn) {
  EXPECT_TRUE(device_->SetStatsInterval(5).ok());
  EXPECT_EQ(device_->stats_polling_interval_s(), 5u);
  absl::Status off = device_->SetStatsInterval(0);
  EXPECT_FALSE(off.ok());
  EXPECT_NE(off.message().find("cannot be turned on or off"), std::string::npos);
  EXPECT_EQ(device_->stats_polling_interval_s(), 5u) << "a refused change changes nothing";
}

TEST_F(BalloonDeviceTest, InflatedPagesGoBackToTheHost) {
  // Pages 100-103 and 200 hold data; inflating them drops it (MADV_DONTNEED
  // on private memory: the next read sees a fresh zero page).
  for (uint32_t pfn : {100, 101, 102, 103, 200}) {
    ASSERT_TRUE(mem_->Write(uint64_t{pfn} * 4096, std::vector<uint8_t>(4096, 0x77)).ok());
  }
  ASSERT_TRUE(mem_->Write(99 * 4096, std::vector<uint8_t>(4096, 0x77)).ok());
  SendPfns(kInflateQueue, {100, 101, 102, 103, 200});
  EXPECT_EQ(device_->balloon_counters().inflated_pages, 5u);
  EXPECT_EQ(*mem_->ReadObj<uint8_t>(102 * 4096 + 5), 0);
  EXPECT_EQ(*mem_->ReadObj<uint8_t>(200 * 4096), 0);
  EXPECT_EQ(*mem_->ReadObj<uint8_t>(99 * 4096), 0x77) << "neighbours keep their data";
  SendPfns(kDeflateQueue, {100, 101});
  EXPECT_EQ(device_->balloon_counters().deflated_pages, 2u);
}

TEST_F(BalloonDeviceTest, FramesOutsideGuestMemoryAreRefused) {
  SendPfns(kInflateQueue, {1024, 0xffffffff, 5});  // 1024 is the first page past 4 MiB
  EXPECT_EQ(device_->balloon_counters().inflated_pages, 1u);
  EXPECT_EQ(device_->counters().request_errors, 2u);
  EXPECT_FALSE(transport_->status() & kStatusNeedsReset);
}

TEST_F(BalloonDeviceTest, StatisticsRoundTrip) {
  // The guest primes the stats queue: (tag 4 free-memory, value) packed.
  uint8_t stat[10];
  uint16_t tag = 4;
  uint64_t free_bytes = 123456789;
  std::memcpy(stat, &tag, 2);
  std::memcpy(stat + 2, &free_bytes, 8);
  ASSERT_TRUE(mem_->Write(kStats, stat).ok());
  driver_->queue(kStatsQueue).Add({{kStats, 10, false}});
  driver_->Kick(kStatsQueue);
  EXPECT_EQ(device_->stats().at(4), free_bytes);
  EXPECT_FALSE(driver_->queue(kStatsQueue).PopUsed()) << "held until the next poll";
  // The poll timer fires (1 s): the buffer goes back as a request.
  usleep(1100 * 1000);
  transport_->NotifyBackend(EPOLLIN);
  EXPECT_TRUE(driver_->queue(kStatsQueue).PopUsed());
}

TEST_F(BalloonDeviceTest, ABrokenQueueCannotMakeTheStatsTimerSpinTheLoop) {
  testing::DriverQueue& q = driver_->queue(kInflateQueue);
  q.WriteDescriptor(0, kPfnList, 16, kDescFlagNext, 0);  // loops onto itself
  q.Publish(0);
  driver_->Kick(kInflateQueue);
  ASSERT_TRUE(transport_->status() & kStatusNeedsReset);
  ASSERT_TRUE(device_->SetStatsInterval(1).ok());  // the timer expires now
  EXPECT_EQ(BackendWakeups(*transport_), 1) << "the expiry is read, not left ready";
  EXPECT_FALSE(TimerArmed(*device_)) << "a device that needs reset asks for no statistics";
  // The driver resets it and starts again: statistics resume.
  ASSERT_TRUE(driver_->Init(~0ull, 16) & kStatusDriverOk);
  EXPECT_TRUE(TimerArmed(*device_));
}

TEST_F(BalloonDeviceTest, AResetStopsTheStatsTimer) {
  ASSERT_TRUE(device_->SetStatsInterval(1).ok());  // an expiry waits unread
  driver_->Write(0x70, 0);
  EXPECT_FALSE(TimerArmed(*device_));
  EXPECT_EQ(BackendWakeups(*transport_), 0) << "nor is an old expiry left ready";
}


// Free page reporting and hinting: the two optional queues after the
// statistics queue, in 4 MiB of guest memory.
class FreePageTest : public BalloonFixture {
 protected:
  static constexpr uint64_t kBlock = 1 << 20;  // a free block: 1 MiB at 1 MiB
  static constexpr uint64_t kCmd = 0xa0000;    // where the guest keeps its command

  void SetUp() override {
    Start({/*amount_mib=*/0, /*deflate_on_oom=*/false, /*stats_polling_interval_s=*/1,
           /*free_page_hinting=*/true, /*free_page_reporting=*/true});
    Fill();
  }

  // The block and a page on each side of it hold data.
  void Fill() {
    ASSERT_TRUE(mem_->Write(kBlock - 4096, std::vector<uint8_t>(kBlock + 8192, 0x5a)).ok());
  }
  bool BlockDropped() { return *mem_->ReadObj<uint8_t>(kBlock + kBlock / 2) == 0; }
  bool NeighboursKept() {
    return *mem_->ReadObj<uint8_t>(kBlock - 1) == 0x5a &&
           *mem_->ReadObj<uint8_t>(2 * kBlock) == 0x5a;
  }
  void Send(size_t queue, const std::vector<testing::Buffer>& buffers) {
    driver_->queue(queue).Add(buffers);
    driver_->Kick(static_cast<uint32_t>(queue));
    EXPECT_TRUE(driver_->queue(queue).PopUsed()) << "every buffer goes back to the guest";
  }
  void SendCmd(size_t queue, uint32_t cmd) {
    ASSERT_TRUE(mem_->WriteObj(kCmd, cmd).ok());
    Send(queue, {{kCmd, 4, false}});
  }
  uint32_t HostCmd() {
    uint8_t cfg[4];
    transport_->Read(0x100 + 8, cfg);
    uint32_t cmd;
    std::memcpy(&cmd, cfg, 4);
    return cmd;
  }
};

constexpr size_t kHintQueue = 3, kReportQueue = 4;  // with statistics accepted

TEST_F(FreePageTest, BothFeaturesAreOfferedWithTheirQueues) {
  driver_->Write(0x14, 0);
  uint32_t offered = driver_->Read(0x10);
  EXPECT_TRUE(offered & kFeatureFreePageHint);
  EXPECT_TRUE(offered & kFeatureReporting);
  EXPECT_FALSE(offered & (1u << 4)) << "no PAGE_POISON";
  EXPECT_EQ(transport_->num_queues(), 5u);
}

TEST_F(FreePageTest, AReportedBlockIsDroppedBeforeItGoesBack) {
  Send(kReportQueue, {{kBlock, kBlock / 2, true}, {kBlock + kBlock / 2, kBlock / 2, true}});
  EXPECT_TRUE(BlockDropped());
  EXPECT_TRUE(NeighboursKept());
  EXPECT_EQ(device_->balloon_counters().reports, 2u) << "each range counts";
  EXPECT_EQ(device_->balloon_counters().reported_bytes, kBlock);
  EXPECT_EQ(device_->balloon_counters().report_fails, 0u);
}

TEST_F(FreePageTest, QueuesMoveUpWhenTheDriverRefusesAFeature) {
  // Without statistics, hinting is queue 2 and reporting queue 3 (Linux
  // numbers only the queues it uses).
  ASSERT_TRUE(driver_->Init(~kFeatureStatsVq, 16) & kStatusDriverOk);
  Send(3, {{kBlock, kBlock, true}});
  EXPECT_TRUE(BlockDropped());
  EXPECT_EQ(device_->balloon_counters().reports, 1u);
  // Without hinting either, reporting is queue 2.
  Fill();
  ASSERT_TRUE(driver_->Init(~(kFeatureStatsVq | kFeatureFreePageHint), 16) & kStatusDriverOk);
  Send(2, {{kBlock, kBlock, true}});
  EXPECT_TRUE(BlockDropped());
  EXPECT_EQ(device_->balloon_counters().reports, 2u);
}

TEST_F(FreePageTest, BadReportsAreCountedAndDropNothing) {
  Send(kReportQueue, {{kBlock + 1, 4096, true},  // not page-aligned
                      {kBlock, 100, true},       // not whole pages
                      {kBlock, 0, true}});       // empty
  EXPECT_EQ(device_->balloon_counters().report_fails, 3u);
  EXPECT_EQ(device_->balloon_counters().reported_bytes, 0u);
  EXPECT_FALSE(BlockDropped());
  EXPECT_FALSE(transport_->status() & kStatusNeedsReset) << "the guest hurts only itself";
  // A range past guest memory breaks the queue, as for any device.
  driver_->queue(kReportQueue).Add({{(4 << 20) - 4096, 8192, true}});
  driver_->Kick(kReportQueue);
  EXPECT_TRUE(transport_->status() & kStatusNeedsReset);
  EXPECT_EQ(device_->balloon_counters().reported_bytes, 0u);
}

TEST_F(FreePageTest, HintsAreDroppedOnlyDuringTheHostsRun) {
  Send(kHintQueue, {{kBlock, kBlock, true}});
  EXPECT_FALSE(BlockDropped()) << "no run yet";
  EXPECT_EQ(device_->balloon_counters().hints, 0u) << "only hints acted on count";

  driver_->TakeInterrupt();
  ASSERT_TRUE(device_->StartHinting(/*acknowledge_on_stop=*/true).ok());
  EXPECT_TRUE(driver_->TakeInterrupt()) << "a configuration change";
  EXPECT_EQ(HostCmd(), kHintFirstRunId);
  SendCmd(kHintQueue, kHintFirstRunId);  // the guest starts the run
  Send(kHintQueue, {{kBlock, kBlock, true}});
  EXPECT_TRUE(BlockDropped());
  EXPECT_TRUE(NeighboursKept());
  EXPECT_EQ(device_->balloon_counters().hints, 1u);
  EXPECT_EQ(device_->balloon_counters().hinted_bytes, kBlock);
  EXPECT_EQ(device_->hinting_status()->guest_cmd, kHintFirstRunId);

  // The guest stops; the device acknowledges: DONE, the guest frees the
  // blocks, and a late hint must not drop a block it may reuse.
  SendCmd(kHintQueue, kHintCmdStop);
  EXPECT_TRUE(driver_->TakeInterrupt());
  EXPECT_EQ(HostCmd(), kHintCmdDone);
  EXPECT_EQ(device_->hinting_status()->guest_cmd, kHintCmdStop);
  Fill();
  Send(kHintQueue, {{kBlock, kBlock, true}});
  EXPECT_FALSE(BlockDropped());
}

TEST_F(FreePageTest, AStaleRunIdDropsNothing) {
  ASSERT_TRUE(device_->StartHinting(false).ok());
  ASSERT_TRUE(device_->StartHinting(false).ok());
  EXPECT_EQ(HostCmd(), kHintFirstRunId + 1) << "each run its own id";
  SendCmd(kHintQueue, kHintFirstRunId);  // the guest still answers the first run
  Send(kHintQueue, {{kBlock, kBlock, true}});
  EXPECT_FALSE(BlockDropped());
  SendCmd(kHintQueue, kHintFirstRunId + 1);
  Send(kHintQueue, {{kBlock, kBlock, true}});
  EXPECT_TRUE(BlockDropped());
}

TEST_F(FreePageTest, WithoutAcknowledgingTheHostEndsTheRun) {
  ASSERT_TRUE(device_->StartHinting(/*acknowledge_on_stop=*/false).ok());
  SendCmd(kHintQueue, kHintFirstRunId);
  SendCmd(kHintQueue, kHintCmdStop);
  EXPECT_EQ(HostCmd(), kHintFirstRunId) << "the guest's stop is not acknowledged";
  // Hints the guest queued but the device has not served yet are served
  // under the run before the host says DONE.
  ASSERT_TRUE(device_->StartHinting(false).ok());
  SendCmd(kHintQueue, kHintFirstRunId + 1);
  driver_->queue(kHintQueue).Add({{kBlock, kBlock, true}});  // no kick yet
  ASSERT_TRUE(device_->StopHinting().ok());
  EXPECT_TRUE(BlockDropped());
  EXPECT_EQ(HostCmd(), kHintCmdDone);
  EXPECT_EQ(device_->hinting_status()->host_cmd, kHintCmdDone);
}

TEST_F(FreePageTest, AResumeEndsAnOpenRun) {
  ASSERT_TRUE(device_->StartHinting(/*acknowledge_on_stop=*/false).ok());
  SendCmd(kHintQueue, kHintFirstRunId);
  driver_->TakeInterrupt();
  device_->Resumed();
  EXPECT_EQ(HostCmd(), kHintCmdDone);
  EXPECT_TRUE(driver_->TakeInterrupt());
}

TEST_F(FreePageTest, TheStopOfAnOlderRunDoesNotEndTheNewOne) {
  ASSERT_TRUE(device_->StartHinting(true).ok());
  SendCmd(kHintQueue, kHintFirstRunId);
  ASSERT_TRUE(device_->StartHinting(true).ok());
  SendCmd(kHintQueue, kHintCmdStop);  // the guest leaves the first run
  EXPECT_EQ(HostCmd(), kHintFirstRunId + 1);
  SendCmd(kHintQueue, kHintFirstRunId + 1);
  SendCmd(kHintQueue, kHintCmdStop);
  EXPECT_EQ(HostCmd(), kHintCmdDone);
}

TEST_F(FreePageTest, AResetEndsAnOpenRunAndAResumeWithoutOneChangesNothing) {
  device_->Resumed();
  EXPECT_EQ(HostCmd(), kHintCmdStop) << "no run, nothing to end";
  ASSERT_TRUE(device_->StartHinting(false).ok());
  driver_->Write(0x70, 0);  // the driver resets the device mid-run
  EXPECT_EQ(device_->hinting_status()->host_cmd, kHintCmdDone)
      << "a new driver must not pick the old run up";
}

TEST_F(FreePageTest, CommandsWaitForTheDriver) {
  driver_->Write(0x70, 0);  // the driver resets the device
  absl::Status st = device_->StartHinting(true);
  EXPECT_NE(st.message().find("has not started the device"), std::string::npos) << st;
  EXPECT_EQ(device_->StopHinting().code(), st.code());
  EXPECT_TRUE(device_->hinting_status().ok()) << "the status needs no driver";
  EXPECT_FALSE(device_->hinting_status()->guest_cmd) << "a reset forgets the guest's command";
}

TEST_F(BalloonDeviceTest, HintingOffRefusesItsCommands) {
  for (absl::Status st : {device_->StartHinting(true), device_->StopHinting(),
                          device_->hinting_status().status()}) {
    EXPECT_NE(st.message().find("hinting when not enabled"), std::string::npos) << st;
  }
}

}  // namespace
}  // namespace ember::virtio::balloon
