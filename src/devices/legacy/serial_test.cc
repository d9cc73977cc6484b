#include "src/devices/legacy/serial.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace ember {
namespace {

enum : uint64_t { kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7 };
constexpr uint64_t kRegisterCountForTest = Serial::kRegisterCount;

class SerialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(pipe2(pipe_, O_NONBLOCK), 0);
    serial_ = std::make_unique<Serial>(pipe_[1], [this] { interrupts_++; });
  }
  void TearDown() override {
    serial_.reset();
    close(pipe_[0]);
    close(pipe_[1]);
  }
  uint8_t Get(uint64_t reg) {
    uint8_t v = 0;
    serial_->Read(reg, std::span(&v, 1));
    return v;
  }
  void Set(uint64_t reg, uint8_t v) { serial_->Write(reg, std::span<const uint8_t>(&v, 1)); }
  std::string Output() {
    char buf[256];
    ssize_t n = read(pipe_[0], buf, sizeof(buf));
    return n > 0 ? std::string(buf, n) : "";
  }

  int pipe_[2];
  int interrupts_ = 0;
  std::unique_ptr<Serial> serial_;
};

TEST_F(SerialTest, WritesLinesToTheHost) {
  for (char c : std::string("boot\n")) Set(kData, c);
  EXPECT_EQ(Output(), "boot\n");
  Set(kData, 'x');
  EXPECT_EQ(Output(), "") << "partial lines wait for a newline or Flush";
  serial_->Flush();
  EXPECT_EQ(Output(), "x");
}

// Firecracker's serial rate limiter: a line the bucket cannot pay for is
// dropped whole and counted; the bucket refills with time.
TEST_F(SerialTest, OutputBeyondItsRateIsDroppedAndCounted) {
  serial_->LimitOutput({/*size=*/12, /*refill_time_ms=*/200, /*one_time_burst=*/0});
  auto line = [&](const std::string& text) {
    for (char c : text + "\n") Set(kData, c);
  };
  line("first");   // 6 bytes
  line("second");  // 7: 6 left, dropped
  line("third");   // 6: fits
  EXPECT_EQ(Output(), "first\nthird\n");
  SerialCounters c = serial_->counters();
  EXPECT_EQ(c.rate_limiter_dropped_bytes, 7u);
  EXPECT_EQ(c.write_count, 19u) << "the guest's writes all count";
  EXPECT_EQ(c.missed_write_count, 0u);
  usleep(250 * 1000);  // refilled
  line("fourth");
  EXPECT_EQ(Output(), "fourth\n");
  line("a line longer than the bucket");
  EXPECT_EQ(Output(), "");
  EXPECT_EQ(serial_->counters().rate_limiter_dropped_bytes, 7u + 30u);
}

TEST_F(SerialTest, IdleLineStatusAndModemLines) {
  EXPECT_EQ(Get(kLsr), 0x60);
  EXPECT_EQ(Get(kIir) & 0x0f, 0x01) << "no interrupt pending";
  EXPECT_EQ(Get(kMsr), 0xb0);
  Set(kScr, 0x5a);
  EXPECT_EQ(Get(kScr), 0x5a);
}

TEST_F(SerialTest, LoopbackAsLinuxProbesIt) {
  Set(kMcr, 0x1a);  // loop | OUT2 | RTS
  EXPECT_EQ(Get(kMsr) & 0xf0, 0x90);
  Set(kData, 'z');
  EXPECT_EQ(Get(kLsr) & 1, 1) << "looped byte is readable";
  EXPECT_EQ(Get(kData), 'z');
  EXPECT_EQ(Output(), "") << "nothing leaves in loopback";
}

TEST_F(SerialTest, DivisorLatchDoesNotTouchDataOrIer) {
  Set(kLcr, 0x80);
  Set(kData, 0x01);
  Set(kIer, 0x00);
  EXPECT_EQ(Get(kData), 0x01);
  Set(kLcr, 0x03);
  EXPECT_EQ(Get(kIer), 0);
  EXPECT_EQ(interrupts_, 0);
}

TEST_F(SerialTest, TransmitterEmptyInterrupt) {
  Set(kIer, 0x02);
  EXPECT_EQ(interrupts_, 1) << "enabling THRE with an empty THR interrupts";
  EXPECT_EQ(Get(kIir) & 0x0f, 0x02);
  EXPECT_EQ(Get(kIir) & 0x0f, 0x01) << "reading IIR acknowledged it";
  Set(kData, 'a');
  EXPECT_EQ(interrupts_, 2);
}

TEST_F(SerialTest, InputRaisesReceiveInterrupt) {
  Set(kIer, 0x01);
  const uint8_t in[] = {'h', 'i'};
  EXPECT_EQ(serial_->EnqueueInput(in), 2u);
  EXPECT_EQ(interrupts_, 1);
  EXPECT_EQ(Get(kIir) & 0x0f, 0x04);
  EXPECT_EQ(Get(kData), 'h');
  EXPECT_EQ(Get(kData), 'i');
  EXPECT_EQ(Get(kLsr) & 1, 0);
  EXPECT_EQ(Get(kIir) & 0x0f, 0x01);
}

TEST_F(SerialTest, InputBeyondTheLimitIsDroppedAndCounted) {
  std::vector<uint8_t> lots(Serial::kMaxInput + 10, 'x');
  EXPECT_EQ(serial_->EnqueueInput(lots), Serial::kMaxInput);
  EXPECT_EQ(serial_->dropped_input(), 10u);
}

TEST_F(SerialTest, OddAccessesAreHarmless) {
  uint8_t wide[4] = {1, 2, 3, 4};
  serial_->Write(0, std::span<const uint8_t>(wide, 4));
  serial_->Read(0, std::span(wide, 4));
  EXPECT_EQ(wide[0], 0xff);
  Set(99, 1);
  EXPECT_EQ(Get(99), 0xff);
}

TEST_F(SerialTest, CountsWhatFirecrackersUartMetricsCount) {
  for (char c : std::string("ok\n")) Set(kData, static_cast<uint8_t>(c));
  uint8_t in[] = {'x'};
  serial_->EnqueueInput(in);
  Get(kData);
  Get(kData);  // nothing left: no byte read
  uint8_t wide[2] = {};
  serial_->Read(0, std::span(wide, 2));
  serial_->Write(kRegisterCountForTest, std::span<const uint8_t>(wide, 1));
  SerialCounters c = serial_->counters();
  EXPECT_EQ(c.write_count, 3u);
  EXPECT_EQ(c.read_count, 1u);
  EXPECT_EQ(c.flush_count, 1u) << "the line went out in one write";
  EXPECT_EQ(c.missed_read_count, 1u);
  EXPECT_EQ(c.missed_write_count, 1u);
  EXPECT_EQ(c.error_count, 0u);
  EXPECT_EQ(Output(), "ok\n");
}

TEST(SerialOutputTest, AHostFdThatRefusesCountsAnErrorAndTheLostBytes) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK), 0);
  close(p[0]);  // EPIPE (SIGPIPE ignored here)
  signal(SIGPIPE, SIG_IGN);
  Serial serial(p[1], [] {});
  for (char c : std::string("lost\n")) {
    uint8_t b = static_cast<uint8_t>(c);
    serial.Write(0, std::span<const uint8_t>(&b, 1));
  }
  SerialCounters c = serial.counters();
  EXPECT_EQ(c.error_count, 1u);
  EXPECT_EQ(c.missed_write_count, 5u);
  close(p[1]);
}

TEST(SerialOutputTest, ASocketNobodyReadsDropsInsteadOfWaiting) {
  int s[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);  // blocking, as stdout is
  int small = 4096;
  ASSERT_EQ(setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  Serial serial(s[0], [] {});
  const std::string line(1023, 'x');
  for (int i = 0; i < 256; i++) {  // 256 KiB: a blocking write would wait here for good
    for (char c : line + "\n") {
      uint8_t b = static_cast<uint8_t>(c);
      serial.Write(0, std::span<const uint8_t>(&b, 1));
    }
  }
  SerialCounters c = serial.counters();
  EXPECT_GT(c.missed_write_count, 128u * 1024);
  char buf[1024];
  EXPECT_GT(read(s[1], buf, sizeof(buf)), 0) << "what fitted went out";
  int flags = fcntl(s[0], F_GETFL);
  EXPECT_EQ(flags & O_NONBLOCK, 0) << "the shared descriptor stays blocking";
  close(s[0]);
  close(s[1]);
}

}  // namespace
}  // namespace ember
