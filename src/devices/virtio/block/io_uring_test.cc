#include "src/devices/virtio/block/io_uring.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "src/common/testing/test_images.h"

namespace ember::virtio::block {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

class IoUringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ember::testing::WriteTempFile(std::vector<uint8_t>(4096, 0x11));
    file_ = UniqueFd(open(path_.c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(file_.valid());
    auto uring = IoUring::Create(8, file_.get());
    ASSERT_TRUE(uring.ok()) << uring.status();
    uring_ = std::move(*uring);
  }
  void TearDown() override { unlink(path_.c_str()); }

  io_uring_sqe* Sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(uring_->ring());
    EXPECT_NE(sqe, nullptr);
    return sqe;
  }

  // Submits what was prepared and returns the one completion's result.
  int Run() {
    EXPECT_EQ(io_uring_submit(uring_->ring()), 1);
    EXPECT_TRUE(uring_->WaitCompletion(steady_clock::now() + std::chrono::seconds(5)).ok());
    io_uring_cqe* cqe = nullptr;
    EXPECT_EQ(io_uring_peek_cqe(uring_->ring(), &cqe), 0);
    if (cqe == nullptr) return 1;
    int res = cqe->res;
    io_uring_cqe_seen(uring_->ring(), cqe);
    return res;
  }

  // Reads 16 bytes at offset 0 of the registered file.
  int ReadFixed(uint8_t* buf) {
    iov_ = {buf, 16};
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_readv(sqe, IoUring::kFileIndex, &iov_, 1, 0);
    IoUring::UseFixedFile(sqe);
    return Run();
  }

  std::string path_;
  UniqueFd file_;
  std::unique_ptr<IoUring> uring_;
  iovec iov_ = {};
};

TEST_F(IoUringTest, ReadsWritesAndSyncsTheRegisteredFile) {
  uint8_t buf[16] = {};
  EXPECT_EQ(ReadFixed(buf), 16);
  EXPECT_EQ(buf[15], 0x11);

  uint8_t out[16];
  std::fill(std::begin(out), std::end(out), 0x22);
  iov_ = {out, sizeof(out)};
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_writev(sqe, IoUring::kFileIndex, &iov_, 1, 512);
  IoUring::UseFixedFile(sqe);
  EXPECT_EQ(Run(), 16);
  sqe = Sqe();
  io_uring_prep_fsync(sqe, IoUring::kFileIndex, IORING_FSYNC_DATASYNC);
  IoUring::UseFixedFile(sqe);
  EXPECT_EQ(Run(), 0);
  uint8_t back = 0;
  EXPECT_EQ(pread(file_.get(), &back, 1, 512), 1);
  EXPECT_EQ(back, 0x22);
}

// What an io-wq worker would run outside seccomp: all of it refused.
TEST_F(IoUringTest, EveryOtherOpcodeIsRefused) {
  io_uring_prep_openat(Sqe(), AT_FDCWD, "/etc/passwd", O_RDONLY, 0);
  EXPECT_EQ(Run(), -EACCES) << "OPENAT";
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_openat(sqe, AT_FDCWD, "/etc/passwd", O_RDONLY, 0);
  IoUring::UseFixedFile(sqe);
  EXPECT_EQ(Run(), -EACCES) << "OPENAT, with the flag the ring requires";
  io_uring_prep_socket(Sqe(), AF_INET, SOCK_STREAM, 0, 0);
  EXPECT_EQ(Run(), -EACCES) << "SOCKET";
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(9);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sqe = Sqe();
  io_uring_prep_connect(sqe, IoUring::kFileIndex, reinterpret_cast<sockaddr*>(&addr),
                        sizeof(addr));
  IoUring::UseFixedFile(sqe);
  EXPECT_EQ(Run(), -EACCES) << "CONNECT";
  char msg[] = "x";
  sqe = Sqe();
  io_uring_prep_send(sqe, IoUring::kFileIndex, msg, 1, 0);
  IoUring::UseFixedFile(sqe);
  EXPECT_EQ(Run(), -EACCES) << "SEND";
  io_uring_prep_nop(Sqe());
  EXPECT_EQ(Run(), -EACCES) << "NOP";
}

TEST_F(IoUringTest, OnlyTheRegisteredFileIsReachable) {
  // READV on a plain fd (here the very same file) is refused: requests
  // must name the registered file.
  uint8_t buf[16] = {};
  iov_ = {buf, sizeof(buf)};
  io_uring_prep_readv(Sqe(), file_.get(), &iov_, 1, 0);
  EXPECT_EQ(Run(), -EACCES);
  // No other flag either (IOSQE_ASYNC forces an io-wq worker).
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_readv(sqe, IoUring::kFileIndex, &iov_, 1, 0);
  io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE | IOSQE_ASYNC);
  EXPECT_EQ(Run(), -EACCES);
  // Nor can the ring be given more files, another eventfd or new rules.
  int other = file_.get();
  EXPECT_EQ(io_uring_register_files(uring_->ring(), &other, 1), -EACCES);
  EXPECT_EQ(io_uring_register_eventfd(uring_->ring(), uring_->event_fd()), -EACCES);
  io_uring_restriction none = {};
  none.opcode = IORING_RESTRICTION_SQE_OP;
  none.sqe_op = IORING_OP_OPENAT;
  EXPECT_LT(io_uring_register_restrictions(uring_->ring(), &none, 1), 0);
  EXPECT_EQ(ReadFixed(buf), 16) << "and the ring still serves its file";
}

TEST_F(IoUringTest, SetFileSwapsTheRegisteredFile) {
  std::string other_path = ember::testing::WriteTempFile(std::vector<uint8_t>(4096, 0x77));
  UniqueFd other(open(other_path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(uring_->SetFile(other.get()).ok());
  other.reset();  // the ring holds its own reference
  uint8_t buf[16] = {};
  EXPECT_EQ(ReadFixed(buf), 16);
  EXPECT_EQ(buf[0], 0x77);
  unlink(other_path.c_str());
}

TEST_F(IoUringTest, WaitCompletionGivesUpAtTheDeadline) {
  auto start = steady_clock::now();
  absl::Status st = uring_->WaitCompletion(start + milliseconds(50));
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_GE(steady_clock::now() - start, milliseconds(50));
}

void Ignore(int) {}

// A signal while waiting (a vCPU kick, on the thread that resets a drive)
// must not end the wait before the request completes.
TEST_F(IoUringTest, WaitCompletionWaitsOnThroughSignals) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd rd(pipe_fds[0]), wr(pipe_fds[1]);
  ASSERT_TRUE(uring_->SetFile(rd.get()).ok());
  struct sigaction sa = {}, old;
  sa.sa_handler = Ignore;  // no SA_RESTART: the wait sees EINTR
  sigaction(SIGUSR1, &sa, &old);

  uint8_t buf[16] = {};
  iov_ = {buf, sizeof(buf)};
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_readv(sqe, IoUring::kFileIndex, &iov_, 1, 0);
  IoUring::UseFixedFile(sqe);
  ASSERT_EQ(io_uring_submit(uring_->ring()), 1);

  pthread_t waiter = pthread_self();
  std::atomic<int> signals{0};
  std::thread kicker([&] {
    for (int i = 0; i < 5; i++) {
      std::this_thread::sleep_for(milliseconds(30));
      pthread_kill(waiter, SIGUSR1);
      signals++;
    }
    std::this_thread::sleep_for(milliseconds(30));
    EXPECT_EQ(write(wr.get(), "0123456789abcdef", 16), 16);
  });
  absl::Status st = uring_->WaitCompletion(steady_clock::now() + std::chrono::seconds(10));
  int sent = signals.load();
  kicker.join();
  sigaction(SIGUSR1, &old, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(sent, 5) << "the wait ended before the request completed";
  io_uring_cqe* cqe = nullptr;
  ASSERT_EQ(io_uring_peek_cqe(uring_->ring(), &cqe), 0);
  EXPECT_EQ(cqe->res, 16);
  io_uring_cqe_seen(uring_->ring(), cqe);
}

}  // namespace
}  // namespace ember::virtio::block
