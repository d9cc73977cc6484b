#include "src/common/log.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "src/common/unique_fd.h"

namespace ember {
namespace {

// Lines written while it lives go to a memory file instead of stderr.
class CapturedLog {
 public:
  CapturedLog() : fd_(memfd_create("log", MFD_CLOEXEC)) { SetLogSink(fd_.get()); }
  ~CapturedLog() { SetLogSink(-1); }
  std::vector<std::string> Lines() const {
    std::string text(static_cast<size_t>(lseek(fd_.get(), 0, SEEK_END)), '\0');
    EXPECT_EQ(pread(fd_.get(), text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
    return absl::StrSplit(text, '\n', absl::SkipEmpty());
  }

 private:
  UniqueFd fd_;
};

// logger.module: a line gets through when its source file's path below
// the source tree (__FILE__, -fmacro-prefix-map) starts with the module.
TEST(LogModule, OnlyLinesFromFilesBelowThePrefixGetThrough) {
  CapturedLog log;
  SetLogModule("src/devices/");
  LogLine(LogLevel::kWarn, "src/devices/virtio/queue.cc", 1, "from the queue");
  LogLine(LogLevel::kWarn, "src/vmm/vm.cc", 2, "from the vm");
  LOG_WARN("from this test, %s", "src/common/log_test.cc");
  SetLogModule("src/common");
  LOG_WARN("from this test again");
  SetLogModule("");
  LogLine(LogLevel::kWarn, "api/router.cc", 3, "from the router");
  std::vector<std::string> lines = log.Lines();
  ASSERT_EQ(lines.size(), 3u) << absl::StrJoin(lines, "\n");
  EXPECT_NE(lines[0].find("from the queue"), std::string::npos);
  EXPECT_NE(lines[1].find("from this test again"), std::string::npos) << "__FILE__ is relative";
  EXPECT_NE(lines[2].find("from the router"), std::string::npos);
}

TEST(LogRateLimiter, LetsABurstThroughPerWindowAndCountsTheRest) {
  LogRateLimiter limiter;
  uint64_t suppressed = 99;
  for (uint32_t i = 0; i < LogRateLimiter::kBurst; i++) {
    EXPECT_TRUE(limiter.Allow(1000 + i, &suppressed)) << i;
    EXPECT_EQ(suppressed, 0u);
  }
  for (int i = 0; i < 500; i++) EXPECT_FALSE(limiter.Allow(1100, &suppressed));
  EXPECT_FALSE(limiter.Allow(1000 + LogRateLimiter::kWindowMs - 1, &suppressed));
  // A new window: the first line through carries the count of those dropped.
  EXPECT_TRUE(limiter.Allow(1000 + LogRateLimiter::kWindowMs, &suppressed));
  EXPECT_EQ(suppressed, 501u);
  EXPECT_TRUE(limiter.Allow(1000 + LogRateLimiter::kWindowMs, &suppressed));
  EXPECT_EQ(suppressed, 0u) << "reported once";
}

TEST(LogRateLimiter, AFloodFromOneCallSiteWritesABurst) {
  CapturedLog log;
  for (int i = 0; i < 10000; i++) LOG_WARN_RATELIMITED("guest did thing %d", i);
  std::vector<std::string> lines = log.Lines();
  EXPECT_EQ(lines.size(), LogRateLimiter::kBurst);
  EXPECT_NE(lines.front().find("guest did thing 0"), std::string::npos);
}

TEST(LogRateLimiter, CallSitesAreLimitedApart) {
  CapturedLog log;
  for (int i = 0; i < 100; i++) {
    LOG_WARN_RATELIMITED("first site");
    LOG_WARN_RATELIMITED("second site");
  }
  EXPECT_EQ(log.Lines().size(), 2 * LogRateLimiter::kBurst);
}

TEST(LogSink, ASocketNobodyReadsDropsLinesInsteadOfWaiting) {
  int s[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);  // blocking, as stderr is
  int small = 4096;
  ASSERT_EQ(setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  const uint64_t missed_before = GetLogCounters().missed_log_count;
  SetLogSink(s[0]);
  const std::string filler(200, 'x');
  for (int i = 0; i < 2000; i++) LOG_INFO("line %d %s", i, filler);  // 400 KiB
  SetLogSink(-1);
  EXPECT_GT(GetLogCounters().missed_log_count - missed_before, 1000u);
  char buf[256];
  EXPECT_GT(read(s[1], buf, sizeof(buf)), 0) << "the first lines went out";
  EXPECT_EQ(fcntl(s[0], F_GETFL) & O_NONBLOCK, 0) << "the shared descriptor stays blocking";
  close(s[0]);
  close(s[1]);
}

}  // namespace
}  // namespace ember
