#include "src/vmm/boot.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "src/vmm/arch/x86_64/boot_params.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/common/testing/test_images.h"
#include "src/common/unique_fd.h"

namespace ember {
namespace {

GuestMemory Memory(uint64_t size) {
  auto mem = GuestMemory::Create({{0, size}});
  EXPECT_TRUE(mem.ok());
  return std::move(*mem);
}

TEST(InitrdAddressTest, TopOfLowMemoryPageAligned) {
  GuestMemory mem = Memory(128 << 20);
  auto addr = InitrdAddress(mem, 10000, 32 << 20);
  ASSERT_TRUE(addr.ok());
  EXPECT_EQ(*addr % 4096, 0u);
  EXPECT_LE(*addr + 10000, 128u << 20);
  EXPECT_GT(*addr, (128u << 20) - 16384);
}

TEST(InitrdAddressTest, RefusesWhatDoesNotFitAboveTheKernel) {
  GuestMemory mem = Memory(64 << 20);
  EXPECT_FALSE(InitrdAddress(mem, 60 << 20, 16 << 20).ok());
  EXPECT_FALSE(InitrdAddress(mem, 65 << 20, 0).ok());
  EXPECT_FALSE(InitrdAddress(mem, UINT64_MAX, 0).ok());
}

class LoadGuestTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& f : files_) unlink(f.c_str());
  }
  std::string File(const std::vector<uint8_t>& bytes) {
    files_.push_back(testing::WriteTempFile(bytes));
    return files_.back();
  }
  std::vector<std::string> files_;
};

TEST_F(LoadGuestTest, WritesCmdlineInitrdAndZeroPage) {
  GuestMemory mem = Memory(64 << 20);
  BootSourceConfig boot{File(testing::MakeElf({0xf4}, 0x1000000, false)),
                        File(std::vector<uint8_t>(5000, 0xab)), std::nullopt};
  auto entry = LoadGuest(mem, boot, "console=ttyS0", 2);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->protocol, x86_64::BootProtocol::kLinux64);
  auto zp = mem.ReadObj<boot_params>(x86_64::kZeroPageStart);
  ASSERT_TRUE(zp.ok());
  EXPECT_EQ(zp->hdr.ramdisk_size, 5000u);
  auto first = mem.ReadObj<uint8_t>(zp->hdr.ramdisk_image);
  EXPECT_EQ(*first, 0xab);
  std::vector<uint8_t> cmdline(14);
  ASSERT_TRUE(mem.Read(zp->hdr.cmd_line_ptr, cmdline).ok());
  EXPECT_EQ(std::string(cmdline.begin(), cmdline.end()), std::string("console=ttyS0\0", 14));
}

TEST_F(LoadGuestTest, PvhKernelGetsStartInfo) {
  GuestMemory mem = Memory(64 << 20);
  BootSourceConfig boot{File(testing::MakeElf({0xf4}, 0x1000000, true, 0)), "", std::nullopt};
  auto entry = LoadGuest(mem, boot, "x", 1);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->protocol, x86_64::BootProtocol::kPvh);
  auto start = mem.ReadObj<x86_64::HvmStartInfo>(x86_64::kPvhInfoStart);
  EXPECT_EQ(start->magic, x86_64::kHvmStartMagic);
}

TEST_F(LoadGuestTest, ErrorsNameTheFileOrLimit) {
  GuestMemory mem = Memory(64 << 20);
  auto missing = LoadGuest(mem, {"/nonexistent/vmlinux", "", std::nullopt}, "", 1);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/vmlinux"), std::string::npos);

  std::string kernel = File(testing::MakeElf({0xf4}, 0x1000000, false));
  auto no_initrd = LoadGuest(mem, {kernel, "/nonexistent/initrd", std::nullopt}, "", 1);
  ASSERT_FALSE(no_initrd.ok());
  EXPECT_NE(no_initrd.status().message().find("/nonexistent/initrd"), std::string::npos);

  auto empty = LoadGuest(mem, {File({}), "", std::nullopt}, "", 1);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("is empty"), std::string::npos);

  auto dir = LoadGuest(mem, {"/tmp", "", std::nullopt}, "", 1);
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("not a regular file"), std::string::npos);

  auto long_cmdline = LoadGuest(mem, {kernel, "", std::nullopt}, std::string(2048, 'a'), 1);
  ASSERT_FALSE(long_cmdline.ok());
  EXPECT_NE(long_cmdline.status().message().find("command line is 2048 bytes"),
            std::string::npos);
}

// The copy cut into huge-page chunks and shared by two threads fills every
// byte once. (Whether Finish calls the files stable depends on how long
// ago the test wrote them, so it is not checked here.)
TEST_F(LoadGuestTest, TwoThreadsShareTheCopy) {
  GuestMemory mem = Memory(64 << 20);
  std::vector<uint8_t> code(5 << 20);
  for (size_t i = 0; i < code.size(); i++) code[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  std::vector<uint8_t> initrd(3 << 20);
  for (size_t i = 0; i < initrd.size(); i++) initrd[i] = static_cast<uint8_t>(i / 4096 + 1);
  BootSourceConfig boot{File(testing::MakeElf(code, 0x1000000 + 0x1234, false)), File(initrd),
                        std::nullopt};
  auto load = ImageLoad::Plan(mem, boot);
  ASSERT_TRUE(load.ok()) << load.status();
  load->Advise(mem);
  absl::Status other;
  std::thread helper([&] { other = load->CopyShare(); });
  absl::Status mine = load->CopyShare();
  helper.join();
  ASSERT_TRUE(mine.ok()) << mine;
  ASSERT_TRUE(other.ok()) << other;
  ASSERT_TRUE(load->Finish().ok());
  std::vector<uint8_t> got(code.size());
  ASSERT_TRUE(mem.Read(0x1000000 + 0x1234, got).ok());
  EXPECT_TRUE(got == code);
  got.resize(initrd.size());
  ASSERT_TRUE(mem.Read(load->images().initrd_addr, got).ok());
  EXPECT_TRUE(got == initrd);
}

// A Diff snapshot without dirty tracking writes the pages mincore calls
// resident. An initrd's page mapped from its file but dropped from the
// page cache is not a zero page: it must be written too.
TEST_F(LoadGuestTest, PagesMappedFromAFileCountAsResident) {
  GuestMemory mem = Memory(64 << 20);
  std::vector<uint8_t> initrd(2 << 20, 0x5a);
  BootSourceConfig boot{File(testing::MakeElf({0xf4}, 0x1000000, false)), File(initrd),
                        std::nullopt};
  // A lease is taken only with SIGIO blocked (Ember blocks it at start).
  sigset_t sigio, old_mask;
  sigemptyset(&sigio);
  sigaddset(&sigio, SIGIO);
  pthread_sigmask(SIG_BLOCK, &sigio, &old_mask);
  auto load = ImageLoad::Plan(mem, boot);
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ASSERT_TRUE(load.ok()) << load.status();
  if (load->mapped_bytes() == 0) GTEST_SKIP() << "no lease on this file system: copied";
  {
    UniqueFd fd(open(boot.initrd_path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(fdatasync(fd.get()), 0);  // only clean pages can be dropped
    ASSERT_EQ(posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  }
  uint64_t first = load->images().initrd_addr / 4096, pages = initrd.size() / 4096;
  std::vector<unsigned char> cached(pages);
  auto host = mem.HostRange(first * 4096, initrd.size());
  ASSERT_TRUE(host.ok());
  ASSERT_EQ(mincore(host->data(), host->size(), cached.data()), 0);
  if (std::all_of(cached.begin(), cached.end(), [](unsigned char c) { return c & 1; })) {
    GTEST_SKIP() << "the page cache kept the whole initrd";
  }
  auto resident = mem.ResidentPages(0);
  ASSERT_TRUE(resident.ok()) << resident.status();
  for (uint64_t p = first; p < first + pages; p++) {
    ASSERT_TRUE((*resident)[p / 64] >> (p % 64) & 1) << "page " << p;
  }
  uint64_t untouched = (60 << 20) / 4096;  // far from both images
  EXPECT_FALSE((*resident)[untouched / 64] >> (untouched % 64) & 1);
}

}  // namespace
}  // namespace ember
