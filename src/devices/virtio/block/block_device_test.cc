#include "src/devices/virtio/block/block_device.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "src/devices/virtio/block/request.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/backend_loop.h"
#include "src/devices/virtio/testing/mmio_driver.h"
#include "src/common/testing/test_images.h"

namespace ember::virtio::block {
namespace {

using testing::Buffer;

constexpr uint64_t kHeader = 0x80000;
constexpr uint64_t kData = 0x90000;
constexpr uint64_t kStatus = 0xa0000;
constexpr uint64_t kDiskSize = 64 * 1024;

class BlockDeviceTest : public ::testing::TestWithParam<IoEngine> {
 protected:
  void SetUp() override { Start(DriveConfig{"disk0", ""}); }
  void TearDown() override { unlink(path_.c_str()); }

  void Start(DriveConfig config, bool fresh_file = true) {
    if (fresh_file) {
      std::vector<uint8_t> disk(kDiskSize);
      for (size_t i = 0; i < disk.size(); i++) disk[i] = static_cast<uint8_t>(i / 512);
      if (!path_.empty()) unlink(path_.c_str());
      path_ = ember::testing::WriteTempFile(disk);
    }
    config.path_on_host = path_;
    config.io_engine = GetParam();
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 1 << 20}}));
    auto dev = BlockDevice::Create(config);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    ASSERT_TRUE(driver_->Init(~0ull, 64) & kStatusDriverOk);
  }

  // Sends one request and returns (status byte, used length).
  std::pair<uint8_t, uint32_t> Submit(uint32_t type, uint64_t sector, std::vector<Buffer> data,
                                      bool header_writable = false, bool with_status = true) {
    EXPECT_TRUE(mem_->WriteObj(kHeader, RequestHeader{type, 0, sector}).ok());
    EXPECT_TRUE(mem_->WriteObj<uint8_t>(kStatus, 0xee).ok());
    std::vector<Buffer> chain = {{kHeader, 16, header_writable}};
    chain.insert(chain.end(), data.begin(), data.end());
    if (with_status) chain.push_back({kStatus, 1, true});
    driver_->queue(0).Add(chain);
    driver_->Kick(0);
    auto used = WaitUsed();
    EXPECT_TRUE(used.has_value());
    return {*mem_->ReadObj<uint8_t>(kStatus), used ? used->len : 0};
  }

  // The next used element; with the Async engine, first waits for the
  // io_uring's completion eventfd as the VMM loop would.
  std::optional<testing::UsedElement> WaitUsed() {
    for (int i = 0; i < 50; i++) {
      if (auto used = driver_->queue(0).PopUsed()) return used;
      if (device_->backend_fd() < 0) return std::nullopt;
      pollfd p = {device_->backend_fd(), POLLIN, 0};
      poll(&p, 1, 100);
      transport_->NotifyBackend(EPOLLIN);
    }
    return std::nullopt;
  }

  std::vector<uint8_t> Guest(uint64_t addr, size_t len) {
    std::vector<uint8_t> out(len);
    EXPECT_TRUE(mem_->Read(addr, out).ok());
    return out;
  }

  std::vector<uint8_t> Disk(off_t offset, size_t len) {
    std::vector<uint8_t> out(len);
    int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, out.data(), len, offset), static_cast<ssize_t>(len));
    close(fd);
    return out;
  }

  std::string path_;
  std::unique_ptr<GuestMemory> mem_;
  BlockDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_P(BlockDeviceTest, ReadsSectorsIntoScatteredBuffers) {
  auto [status, used] = Submit(kRequestIn, 3, {{kData, 512, true}, {kData + 4096, 1024, true}});
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used, 1536u + 1);
  EXPECT_EQ(Guest(kData, 512), std::vector<uint8_t>(512, 3));
  EXPECT_EQ(Guest(kData + 4096, 512), std::vector<uint8_t>(512, 4));
  EXPECT_EQ(Guest(kData + 4096 + 512, 512), std::vector<uint8_t>(512, 5));
  EXPECT_TRUE(driver_->TakeInterrupt());
}

TEST_P(BlockDeviceTest, WritesReachTheFile) {
  ASSERT_TRUE(mem_->Write(kData, std::vector<uint8_t>(1024, 0xab)).ok());
  auto [status, used] = Submit(kRequestOut, 10, {{kData, 1024, false}});
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used, 1u);
  EXPECT_EQ(Disk(10 * 512, 1024), std::vector<uint8_t>(1024, 0xab));
  EXPECT_EQ(Disk(12 * 512, 1), std::vector<uint8_t>(1, 12)) << "neighbours untouched";
}

TEST_P(BlockDeviceTest, FlushAndGetId) {
  EXPECT_EQ(Submit(kRequestFlush, 0, {}).first, kStatusOk);
  auto [status, used] = Submit(kRequestGetId, 0, {{kData, 20, true}});
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(used, 21u);
  auto id = Guest(kData, 20);
  EXPECT_EQ(std::string(id.begin(), id.begin() + 5), "disk0");
  EXPECT_EQ(id[5], 0);
}

TEST_P(BlockDeviceTest, UnknownRequestIsUnsupported) {
  EXPECT_EQ(Submit(99, 0, {{kData, 512, true}}).first, kStatusUnsupported);
}

TEST_P(BlockDeviceTest, OutOfRangeAndMalformedRequestsGetIoErrors) {
  const uint64_t sectors = kDiskSize / 512;
  EXPECT_EQ(Submit(kRequestIn, sectors, {{kData, 512, true}}).first, kStatusIoError);
  EXPECT_EQ(Submit(kRequestIn, sectors - 1, {{kData, 1024, true}}).first, kStatusIoError);
  EXPECT_EQ(Submit(kRequestIn, UINT64_MAX, {{kData, 512, true}}).first, kStatusIoError);
  EXPECT_EQ(Submit(kRequestIn, 0, {{kData, 100, true}}).first, kStatusIoError) << "not 512n";
  EXPECT_EQ(Submit(kRequestIn, 0, {{kData, 512, false}}).first, kStatusIoError)
      << "device must not write a driver-only buffer";
  EXPECT_EQ(Submit(kRequestOut, 0, {{kData, 512, true}}).first, kStatusIoError);
  EXPECT_EQ(Submit(kRequestIn, 0, {{kData, 512, true}}, /*header_writable=*/true).first,
            kStatusIoError);
  EXPECT_EQ(Submit(kRequestIn, 0, {{kData, 0, true}, {kData, 512, true}}).first,
            kStatusIoError)
      << "zero-length buffer";
  EXPECT_EQ(Submit(kRequestGetId, 0, {{kData, 8, true}}).first, kStatusIoError);
  EXPECT_EQ(device_->counters().request_errors, 9u);
  EXPECT_EQ(Disk(0, 512), std::vector<uint8_t>(512, 0)) << "nothing written";
}

TEST_P(BlockDeviceTest, ChainWithoutStatusIsReturnedEmpty) {
  auto [status, used] = Submit(kRequestIn, 0, {{kData, 512, false}}, false, /*with_status=*/false);
  EXPECT_EQ(status, 0xee) << "no status byte to write";
  EXPECT_EQ(used, 0u);
  EXPECT_EQ(device_->counters().request_errors, 1u);
  EXPECT_FALSE(transport_->status() & kStatusNeedsReset) << "the device serves on";
}

TEST_P(BlockDeviceTest, ReadOnlyDriveRefusesWrites) {
  Start(DriveConfig{"ro", "", false, /*is_read_only=*/true});
  driver_->Write(0x14, 0);
  EXPECT_TRUE(driver_->Read(0x10) & kFeatureReadOnly);
  ASSERT_TRUE(mem_->Write(kData, std::vector<uint8_t>(512, 0xcd)).ok());
  EXPECT_EQ(Submit(kRequestOut, 0, {{kData, 512, false}}).first, kStatusIoError);
  EXPECT_EQ(Disk(0, 512), std::vector<uint8_t>(512, 0));
  EXPECT_EQ(Submit(kRequestIn, 1, {{kData, 512, true}}).first, kStatusOk);
}

TEST_P(BlockDeviceTest, FlushFeatureOnlyForWriteback) {
  driver_->Write(0x14, 0);
  EXPECT_FALSE(driver_->Read(0x10) & kFeatureFlush);
  DriveConfig wb{"wb", ""};
  wb.cache_type = CacheType::kWriteback;
  Start(wb);
  driver_->Write(0x14, 0);
  EXPECT_TRUE(driver_->Read(0x10) & kFeatureFlush);
  EXPECT_EQ(Submit(kRequestFlush, 0, {}).first, kStatusOk);
}

TEST_P(BlockDeviceTest, BackendErrorsReachTheGuestAndAreCounted) {
  // A file size limit makes the host's pwrite fail with EFBIG.
  signal(SIGXFSZ, SIG_IGN);
  rlimit old;
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = {4096, old.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  ASSERT_TRUE(mem_->Write(kData, std::vector<uint8_t>(512, 1)).ok());
  uint8_t status = Submit(kRequestOut, 20, {{kData, 512, false}}).first;
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_EQ(status, kStatusIoError);
  EXPECT_EQ(device_->counters().backend_errors, 1u);

  // A file that shrinks under the guest: reads past its end fail.
  ASSERT_EQ(truncate(path_.c_str(), 1024), 0);
  EXPECT_EQ(Submit(kRequestIn, 8, {{kData, 512, true}}).first, kStatusIoError);
  EXPECT_EQ(device_->counters().backend_errors, 2u);
  EXPECT_EQ(Submit(kRequestIn, 1, {{kData, 512, true}}).first, kStatusOk) << "still serving";
}

TEST_P(BlockDeviceTest, SwappingTheBackingFileChangesContentAndSize) {
  std::string other = ember::testing::WriteTempFile(std::vector<uint8_t>(4096, 0x99));
  driver_->TakeInterrupt();
  ASSERT_TRUE(transport_->WithDevice([&](VirtioDevice&) { return device_->SwapBacking(other); }).ok());
  EXPECT_EQ(driver_->Read(0x60) & kInterruptConfigChange, kInterruptConfigChange);
  uint8_t cap[8];
  transport_->Read(0x100, cap);
  uint64_t sectors;
  std::memcpy(&sectors, cap, 8);
  EXPECT_EQ(sectors, 8u);
  EXPECT_EQ(Submit(kRequestIn, 1, {{kData, 512, true}}).first, kStatusOk);
  EXPECT_EQ(Guest(kData, 4), std::vector<uint8_t>(4, 0x99));
  EXPECT_EQ(Submit(kRequestIn, 8, {{kData, 512, true}}).first, kStatusIoError) << "new size";
  EXPECT_FALSE(device_->SwapBacking("/nonexistent/disk").ok());
  EXPECT_EQ(device_->config().path_on_host, other) << "a failed swap changes nothing";
  unlink(other.c_str());
}

TEST_P(BlockDeviceTest, ManyRequestsOneInterruptWithEventIdx) {
  for (int i = 0; i < 8; i++) {
    ASSERT_TRUE(mem_->WriteObj(kHeader + i * 16, RequestHeader{kRequestIn, 0, uint64_t(i)}).ok());
    driver_->queue(0).Add({{kHeader + i * 16, 16, false},
                           {kData + i * 512, 512, true},
                           {kStatus + i, 1, true}});
  }
  driver_->queue(0).SetUsedEvent(7);  // interrupt once the 8th is used
  driver_->Kick(0);
  int used = 0;
  while (used < 8 && WaitUsed()) used++;
  EXPECT_EQ(used, 8);
  EXPECT_TRUE(driver_->TakeInterrupt());
  EXPECT_FALSE(driver_->TakeInterrupt());
  EXPECT_EQ(Guest(kData + 7 * 512, 1)[0], 7);
}

INSTANTIATE_TEST_SUITE_P(Engines, BlockDeviceTest,
                         ::testing::Values(IoEngine::kSync, IoEngine::kAsync),
                         [](const auto& info) {
                           return info.param == IoEngine::kSync ? "Sync" : "Async";
                         });

// The Async engine's ring and eventfd, as the VMM loop and a hostile
// driver see them.
class AsyncBlockDeviceTest : public BlockDeviceTest {
 protected:
  // Queues a read of one sector into kData (not kicked).
  void AddRead(uint64_t sector) {
    ASSERT_TRUE(mem_->WriteObj(kHeader, RequestHeader{kRequestIn, 0, sector}).ok());
    driver_->queue(0).Add({{kHeader, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
  }

  bool EventFdReady(int timeout_ms) {
    pollfd p = {device_->backend_fd(), POLLIN, 0};
    return poll(&p, 1, timeout_ms) == 1;
  }
};

// Issue 12, defect 2: a reset while a request is in flight left the
// eventfd ready, and the loop woke for ever.
TEST_P(AsyncBlockDeviceTest, ResetWithARequestInFlightLeavesTheLoopQuiet) {
  AddRead(1);
  driver_->Kick(0);  // submitted; its completion is not reaped yet
  driver_->Write(0x70, 0);  // the driver resets the device
  EXPECT_FALSE(EventFdReady(0)) << "the reset leaves nothing for the VMM loop";
  EXPECT_LE(testing::BackendWakeups(*transport_, 50, 1), 1);
  ASSERT_TRUE(driver_->Init(~0ull, 64) & kStatusDriverOk);
  EXPECT_FALSE(driver_->queue(0).PopUsed()) << "the old request is not answered";
  EXPECT_EQ(Submit(kRequestIn, 2, {{kData, 512, true}}).first, kStatusOk);
  EXPECT_EQ(Guest(kData, 1)[0], 2);
}

// Issue 12, defect 2: a queue broken with a request in flight: the
// transport waits for the driver's reset and the completion stays in the
// ring, but the VMM loop must not spin meanwhile.
TEST_P(AsyncBlockDeviceTest, BrokenQueueWithARequestInFlightDoesNotSpinTheLoop) {
  AddRead(1);
  driver_->queue(0).WriteDescriptor(10, kHeader, 16, kDescFlagNext, 10);  // a loop
  driver_->queue(0).Publish(10);
  driver_->Kick(0);
  ASSERT_TRUE(transport_->status() & kStatusNeedsReset);
  ASSERT_TRUE(EventFdReady(1000)) << "the read completed";
  EXPECT_LE(testing::BackendWakeups(*transport_, 50, 1), 1);
  ASSERT_TRUE(driver_->Init(~0ull, 64) & kStatusDriverOk);
  EXPECT_FALSE(EventFdReady(0));
  EXPECT_EQ(Submit(kRequestIn, 3, {{kData, 512, true}}).first, kStatusOk);
  EXPECT_EQ(Guest(kData, 1)[0], 3);
}

// Issue 12, defect 5: the drive's ring runs nothing but its own I/O.
TEST_P(AsyncBlockDeviceTest, TheRingRefusesAnythingButTheDrivesIo) {
  IoUring* uring = device_->io_uring_for_testing();
  ASSERT_NE(uring, nullptr);
  io_uring_sqe* sqe = io_uring_get_sqe(uring->ring());
  io_uring_prep_openat(sqe, AT_FDCWD, "/etc/passwd", O_RDONLY, 0);
  io_uring_sqe_set_data64(sqe, ~0ull);
  ASSERT_EQ(io_uring_submit(uring->ring()), 1);
  ASSERT_TRUE(uring->WaitCompletion(std::chrono::steady_clock::now() + std::chrono::seconds(5))
                  .ok());
  io_uring_cqe* cqe = nullptr;
  ASSERT_EQ(io_uring_peek_cqe(uring->ring(), &cqe), 0);
  EXPECT_EQ(cqe->res, -EACCES);
  io_uring_cqe_seen(uring->ring(), cqe);
  EXPECT_EQ(Submit(kRequestIn, 4, {{kData, 512, true}}).first, kStatusOk) << "the drive serves on";
}

void IgnoreSignal(int) {}

// Issue 12, defect 7: a signal (a vCPU kick) while a reset waits for the
// requests in flight ended the wait; the request then completed into the
// re-initialised queue. The ring reads a pipe here, so the request stays
// in flight until the test writes to it.
TEST_P(AsyncBlockDeviceTest, ASignalDuringTheResetDoesNotLetARequestThrough) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd rd(fds[0]), wr(fds[1]);
  IoUring* uring = device_->io_uring_for_testing();
  ASSERT_TRUE(uring->SetFile(rd.get()).ok());
  struct sigaction sa = {}, old;
  sa.sa_handler = IgnoreSignal;  // no SA_RESTART: the wait sees EINTR
  sigaction(SIGUSR1, &sa, &old);
  AddRead(0);
  driver_->Kick(0);
  ASSERT_FALSE(EventFdReady(50)) << "the read waits for the pipe";

  pthread_t resetter = pthread_self();
  std::atomic<int> signals{0};
  std::thread kicker([&] {
    for (int i = 0; i < 5; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      pthread_kill(resetter, SIGUSR1);
      signals++;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::vector<uint8_t> sector(512, 0x5a);
    EXPECT_EQ(write(wr.get(), sector.data(), sector.size()), 512);
  });
  ASSERT_TRUE(mem_->Write(kData, std::vector<uint8_t>(512, 0)).ok());
  bool ok = driver_->Init(~0ull, 64) & kStatusDriverOk;  // resets first
  int sent = signals.load();
  kicker.join();
  sigaction(SIGUSR1, &old, nullptr);
  ASSERT_TRUE(ok);
  EXPECT_EQ(sent, 5) << "the reset returned with the request in flight";
  for (int i = 0; i < 5; i++) {
    EventFdReady(20);
    transport_->NotifyBackend(EPOLLIN);
  }
  EXPECT_FALSE(driver_->queue(0).PopUsed()) << "the old request reached the new queue";

  UniqueFd disk(open(path_.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(uring->SetFile(disk.get()).ok());
  EXPECT_EQ(Submit(kRequestIn, 5, {{kData + 512, 512, true}}).first, kStatusOk);
  EXPECT_EQ(Guest(kData + 512, 1)[0], 5);
}

INSTANTIATE_TEST_SUITE_P(Engines, AsyncBlockDeviceTest, ::testing::Values(IoEngine::kAsync),
                         [](const auto&) { return "Async"; });

TEST(BlockDeviceCreateTest, Errors) {
  auto missing = BlockDevice::Create({"d", "/nonexistent/disk.img"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("drive d: /nonexistent/disk.img"), std::string::npos);
  auto dir = BlockDevice::Create({"d", "/tmp"});
  EXPECT_FALSE(dir.ok());
}

}  // namespace
}  // namespace ember::virtio::block
