// virtio-pmem through the host-side driver, on real files: the region
// the guest is told of, flushes that reach the file, malformed requests,
// the limiter, and the saved state a restore checks.
#include "src/devices/virtio/pmem/pmem_device.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::pmem {
namespace {

constexpr uint64_t kGuestAddr = 8ull << 30;
constexpr uint64_t kReq = 0x100000, kStatus = 0x100100;

// Named by this process too: another tree's tests may share the directory.
std::string TempFile(const std::string& name, size_t bytes) {
  std::string path = ::testing::TempDir() + "/" + name + "." + std::to_string(getpid());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string(bytes, 'a');
  return path;
}

class PmemDeviceTest : public ::testing::Test {
 protected:
  void Start(const PmemConfig& config) {
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 4 << 20}}));
    absl::StatusOr<PmemBacking> backing = PmemBacking::Map(config.path_on_host, config.read_only);
    ASSERT_TRUE(backing.ok()) << backing.status();
    host_ = backing->host();
    auto dev = PmemDevice::Create(config, std::move(*backing), kGuestAddr);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    ASSERT_TRUE(driver_->Init(~0ull, 256) & kStatusDriverOk);
  }
  void TearDown() override { unlink(path_.c_str()); }
  // On a 1 MiB file `name`, with one flush a minute.
  void StartOneFlushAMinute(const std::string& name) {
    path_ = TempFile(name, 1 << 20);
    PmemConfig config{"p0", path_};
    config.rate_limiter = RateLimiterConfig{std::nullopt, kOneAMinute};
    Start(config);
  }
  static constexpr TokenBucketConfig kOneAMinute{1, 60000, 0};

  // A flush request as Linux's virtio_pmem sends it; the status written.
  std::optional<uint32_t> Flush(uint32_t type = kRequestFlush) {
    EXPECT_TRUE(mem_->WriteObj<uint32_t>(kReq, type).ok());
    EXPECT_TRUE(mem_->WriteObj<uint32_t>(kStatus, 0xdead).ok());
    driver_->queue(0).Add({{kReq, 4, false}, {kStatus, 4, true}});
    driver_->Kick(0);
    std::optional<testing::UsedElement> used = driver_->queue(0).PopUsed();
    if (!used || used->len != 4) return std::nullopt;
    return *mem_->ReadObj<uint32_t>(kStatus);
  }

  std::string path_;
  uint8_t* host_ = nullptr;
  std::unique_ptr<GuestMemory> mem_;
  PmemDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
};

TEST_F(PmemDeviceTest, TheGuestIsToldOfA2MiBAlignedRegion) {
  path_ = TempFile("pmem-3m", 3 << 20);
  Start({"p0", path_});
  EXPECT_EQ(driver_->Read(0x08), kDeviceTypePmem);
  uint64_t start = 0, size = 0;
  uint8_t cfg[16];
  transport_->Read(0x100, std::span<uint8_t>(cfg, 8));
  transport_->Read(0x108, std::span<uint8_t>(cfg + 8, 8));
  std::memcpy(&start, cfg, 8);
  std::memcpy(&size, cfg + 8, 8);
  EXPECT_EQ(start, kGuestAddr);
  EXPECT_EQ(size, 4u << 20) << "3 MiB of file, padded to 4";
  EXPECT_EQ(device_->backing().file_size(), 3u << 20);
  EXPECT_EQ(host_[0], 'a') << "the file, mapped";
  EXPECT_EQ(host_[(3 << 20) + 5], 0) << "the padding";
}

TEST_F(PmemDeviceTest, AFlushWritesTheGuestsStoresToTheFile) {
  path_ = TempFile("pmem-flush", 2 << 20);
  Start({"p0", path_});
  std::memcpy(host_ + 4096, "ember", 5);  // the guest's store, through its mapping
  EXPECT_EQ(Flush(), kResponseOk);
  std::ifstream in(path_, std::ios::binary);
  in.seekg(4096);
  char got[5];
  in.read(got, 5);
  EXPECT_EQ(std::string(got, 5), "ember");
  EXPECT_EQ(device_->pmem_counters().queue_event_count, 1u);
  EXPECT_TRUE(driver_->TakeInterrupt());
}

TEST_F(PmemDeviceTest, MalformedRequestsAreAnsweredWithNothingAndCounted) {
  path_ = TempFile("pmem-bad", 1 << 20);
  Start({"p0", path_});
  EXPECT_EQ(Flush(7), std::nullopt) << "an unknown request type";
  driver_->queue(0).Add({{kReq, 4, false}});  // no status buffer
  driver_->Kick(0);
  std::optional<testing::UsedElement> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 0u);
  driver_->queue(0).Add({{kReq, 4, true}, {kStatus, 4, true}});  // a writable request
  driver_->Kick(0);
  ASSERT_TRUE(driver_->queue(0).PopUsed());
  EXPECT_EQ(device_->pmem_counters().event_fails, 3u);
  EXPECT_EQ(Flush(), kResponseOk) << "and the device goes on";
}

TEST_F(PmemDeviceTest, AReadOnlyFileIsMappedReadOnly) {
  path_ = TempFile("pmem-ro", 1 << 20);
  Start({"p0", path_, false, /*read_only=*/true});
  EXPECT_TRUE(device_->backing().read_only());
  EXPECT_EQ(Flush(), kResponseOk);
  EXPECT_DEATH(host_[0] = 'b', "") << "the file's pages are not writable";
}

TEST_F(PmemDeviceTest, TheLimiterHoldsFlushesBackUntilItsTimer) {
  StartOneFlushAMinute("pmem-limit");
  EXPECT_EQ(Flush(), kResponseOk);
  EXPECT_EQ(Flush(), std::nullopt) << "the second waits in the ring";
  EXPECT_EQ(device_->pmem_counters().rate_limiter_throttled_events, 1u);
  RateLimiterUpdate lift;
  lift.ops = std::optional<TokenBucketConfig>();  // the ops bucket removed
  device_->UpdateRateLimiter(lift);
  device_->ProcessTimer();
  std::optional<testing::UsedElement> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used) << "served once the limits were lifted";
  EXPECT_EQ(used->len, 4u);
}

TEST_F(PmemDeviceTest, ARestoreChecksTheRegionIsTheSnapshots) {
  path_ = TempFile("pmem-state", 2 << 20);
  Start({"p0", path_});
  std::vector<uint8_t> state = device_->SaveDeviceState();
  EXPECT_TRUE(device_->RestoreDeviceState(state).ok());
  state[8] ^= 1;  // another region size
  absl::Status st = device_->RestoreDeviceState(state);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("pmem p0: the snapshot has its region"), std::string::npos) << st;
  EXPECT_FALSE(device_->RestoreDeviceState({}).ok());
}

TEST_F(PmemDeviceTest, ARestoreKeepsTheLimitersTokens) {
  StartOneFlushAMinute("pmem-limit-state");
  EXPECT_EQ(Flush(), kResponseOk);
  std::vector<uint8_t> state = device_->SaveDeviceState();
  RateLimiterUpdate fresh;
  fresh.ops = kOneAMinute;
  device_->UpdateRateLimiter(fresh);  // full again
  ASSERT_TRUE(device_->RestoreDeviceState(state).ok());
  EXPECT_EQ(Flush(), std::nullopt) << "the snapshot's bucket was empty";
  state.resize(16);  // an older Ember's: the region alone
  EXPECT_TRUE(device_->RestoreDeviceState(state).ok());
}

TEST(PmemBackingTest, EmptyFilesAndDirectoriesAreRefused) {
  std::string empty = TempFile("pmem-empty", 0);
  absl::StatusOr<PmemBacking> b = PmemBacking::Map(empty, false);
  EXPECT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("is empty"), std::string::npos) << b.status();
  unlink(empty.c_str());
  b = PmemBacking::Map(::testing::TempDir(), true);
  EXPECT_FALSE(b.ok());
  b = PmemBacking::Map("/nonexistent/pmem", false);
  EXPECT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("/nonexistent/pmem"), std::string::npos);
}

}  // namespace
}  // namespace ember::virtio::pmem
