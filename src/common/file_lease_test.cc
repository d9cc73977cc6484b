#include "src/common/file_lease.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "src/common/testing/smaps.h"

namespace ember {
namespace {

constexpr size_t kLen = 4 * 4096;

// Whether this process maps `path` anywhere.
bool MapsFile(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.ends_with(" " + path)) return true;
  }
  return false;
}

void NoAdvice(std::span<uint8_t>) {}

// A file of kLen 'A's, and SIGIO blocked in this thread (Take requires it)
// and in the writers it starts.
class FileLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGIO);
    pthread_sigmask(SIG_BLOCK, &set, &old_mask_);
    char path[] = "/tmp/ember-lease-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    std::vector<char> bytes(kLen, 'A');
    ASSERT_EQ(write(fd, bytes.data(), kLen), static_cast<ssize_t>(kLen));
    close(fd);
    path_ = path;
    UniqueFd probe(open(path, O_RDONLY | O_CLOEXEC));
    absl::StatusOr<FileLease> lease = FileLease::Take(probe.get());
    if (!lease.ok()) GTEST_SKIP() << "/tmp takes no lease here: " << lease.status();
  }
  void TearDown() override {
    // A SIGIO still pending would end the process once let through.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGIO);
    const timespec now = {0, 0};
    while (sigtimedwait(&set, nullptr, &now) == SIGIO) {
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
    unlink(path_.c_str());
  }

  // A lease on path_ and a private mapping of its first `len` bytes,
  // which the lease covers.
  uint8_t* LeaseAndMap(size_t len, UniqueFd& fd, std::optional<FileLease>& lease) {
    fd.reset(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    absl::StatusOr<FileLease> taken = FileLease::Take(fd.get());
    EXPECT_TRUE(taken.ok()) << taken.status();
    if (!taken.ok()) return nullptr;
    void* mapped = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
    EXPECT_NE(mapped, MAP_FAILED);
    if (mapped == MAP_FAILED) return nullptr;
    lease = std::move(*taken);
    lease->Cover({static_cast<uint8_t*>(mapped), len});
    return static_cast<uint8_t*>(mapped);
  }

  std::string path_;
  sigset_t old_mask_;
};

TEST_F(FileLeaseTest, AWriterWaitsUntilTheMappedPagesAreCopied) {
  UniqueFd fd;
  std::optional<FileLease> lease;
  auto* mapped = reinterpret_cast<char*>(LeaseAndMap(kLen, fd, lease));
  ASSERT_NE(mapped, nullptr);
  mapped[0] = 'G';  // a page the guest wrote
  absl::StatusOr<UniqueFd> signals = LeaseSignalFd();
  ASSERT_TRUE(signals.ok()) << signals.status();
  EXPECT_FALSE(lease->broken());

  // Cuts the file to half, then fills it with 'B's.
  std::atomic<bool> written = false;
  std::thread writer([&] {
    int w = open(path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    std::vector<char> bytes(kLen / 2, 'B');
    (void)!write(w, bytes.data(), bytes.size());
    close(w);
    written = true;
  });
  pollfd p = {signals->get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 10'000), 1) << "SIGIO when the writer opened the file";
  DrainSignalFd(signals->get());
  EXPECT_TRUE(lease->broken());
  EXPECT_FALSE(written) << "the writer waits for the leaseholder";
  absl::Status copied = lease->CopyAndRelease(NoAdvice);
  writer.join();
  ASSERT_TRUE(copied.ok()) << copied;
  EXPECT_TRUE(written);
  EXPECT_FALSE(lease->broken()) << "released";

  // The old bytes and the guest's write, even in the pages the truncation
  // cut off (a private copy-on-write page there would be dropped).
  EXPECT_EQ(mapped[0], 'G');
  EXPECT_EQ(std::string(mapped + 1, kLen - 1), std::string(kLen - 1, 'A'));
  EXPECT_FALSE(MapsFile(path_)) << "the range is anonymous memory now";
  munmap(mapped, kLen);
}

TEST_F(FileLeaseTest, CopiesARangeLargerThanOnePieceWhole) {
  // 40 MiB and a page: more than one 32 MiB piece, the last one short.
  constexpr size_t kLarge = (40 << 20) + 4096;
  std::vector<uint8_t> bytes(kLarge);
  for (size_t i = 0; i < kLarge; i++) bytes[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  {
    UniqueFd w(open(path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    ASSERT_EQ(write(w.get(), bytes.data(), kLarge), static_cast<ssize_t>(kLarge));
  }
  UniqueFd fd;
  std::optional<FileLease> lease;
  uint8_t* mapped = LeaseAndMap(kLarge, fd, lease);
  ASSERT_NE(mapped, nullptr);
  // Each piece is handed back at its place, once anonymous, for the
  // advice the copy lacks.
  std::vector<std::span<uint8_t>> moved;
  ASSERT_TRUE(lease->CopyAndRelease([&](std::span<uint8_t> piece) {
                     moved.push_back(piece);
                     madvise(piece.data(), piece.size(), MADV_DONTFORK);
                   }).ok());
  ASSERT_EQ(moved.size(), 2u);
  EXPECT_EQ(moved[0].data(), mapped);
  EXPECT_EQ(moved[0].size(), size_t{32} << 20);
  EXPECT_EQ(moved[1].data(), mapped + moved[0].size());
  EXPECT_EQ(moved[1].size(), kLarge - moved[0].size());
  EXPECT_NE(testing::VmFlags(mapped).find(" dc "), std::string::npos) << testing::VmFlags(mapped);
  EXPECT_FALSE(MapsFile(path_));
  // Rewritten after the release: the copy keeps the old bytes.
  {
    UniqueFd w(open(path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  }
  EXPECT_EQ(std::memcmp(mapped, bytes.data(), kLarge), 0);
  munmap(mapped, kLarge);
}

TEST_F(FileLeaseTest, NamesItsFileUntilReleased) {
  UniqueFd fd(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  absl::StatusOr<FileLease> lease = FileLease::Take(fd.get());
  ASSERT_TRUE(lease.ok()) << lease.status();
  std::string link = path_ + ".link";
  ASSERT_EQ(::link(path_.c_str(), link.c_str()), 0);
  EXPECT_TRUE(lease->Names(path_));
  EXPECT_TRUE(lease->Names(link)) << "the same file by another name";
  EXPECT_FALSE(lease->Names("/proc/self/exe"));
  EXPECT_FALSE(lease->Names(path_ + ".missing"));
  ASSERT_TRUE(lease->CopyAndRelease(NoAdvice).ok());
  EXPECT_FALSE(lease->Names(path_)) << "released";
  unlink(link.c_str());
}

TEST_F(FileLeaseTest, IsRefusedWhileTheFileIsOpenForWriting) {
  UniqueFd writer(open(path_.c_str(), O_WRONLY | O_CLOEXEC));
  UniqueFd fd(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(FileLease::Take(fd.get()).ok());
  writer.reset();
  EXPECT_TRUE(FileLease::Take(fd.get()).ok()) << "once the writer is gone";
}

TEST_F(FileLeaseTest, AnUnleasedFileIsNamedAndCopiedOnRequest) {
  // Where no lease can be had (here: a writer has the file open), the
  // holder still copies before its own write.
  UniqueFd writer(open(path_.c_str(), O_WRONLY | O_CLOEXEC));
  UniqueFd fd(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_FALSE(FileLease::Take(fd.get()).ok());
  absl::StatusOr<FileLease> unleased = FileLease::Unleased(fd.get());
  ASSERT_TRUE(unleased.ok()) << unleased.status();
  EXPECT_FALSE(unleased->leased());
  EXPECT_FALSE(unleased->broken()) << "no lease to break";
  EXPECT_TRUE(unleased->Names(path_));
  auto* mapped = static_cast<char*>(
      mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0));
  ASSERT_NE(mapped, MAP_FAILED);
  unleased->Cover({reinterpret_cast<uint8_t*>(mapped), kLen});
  ASSERT_TRUE(unleased->CopyAndRelease(NoAdvice).ok());
  EXPECT_FALSE(unleased->Names(path_)) << "released";
  ASSERT_EQ(ftruncate(writer.get(), 0), 0);
  EXPECT_EQ(std::string(mapped, kLen), std::string(kLen, 'A')) << "the copy outlives the file";
  munmap(mapped, kLen);
}

TEST_F(FileLeaseTest, IsRefusedWhereSigioWouldEndTheProcess) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  UniqueFd fd(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  absl::StatusOr<FileLease> lease = FileLease::Take(fd.get());
  EXPECT_FALSE(lease.ok());
  EXPECT_NE(lease.status().message().find("SIGIO"), std::string::npos) << lease.status();
}

}  // namespace
}  // namespace ember
