#include "src/common/open_no_wait.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace ember {
namespace {

class OpenNoWaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ember-open-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    fifo_ = dir_ + "/fifo";
    ASSERT_EQ(mkfifo(fifo_.c_str(), 0600), 0);
  }
  void TearDown() override {
    unlink(fifo_.c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_, fifo_;
};

TEST_F(OpenNoWaitTest, AFifoWithNoWriterOpensAtOnceAndThenBlocksAsUsual) {
  // A plain open would wait here for a writer, forever.
  UniqueFd fd = OpenNoWait(fifo_, O_RDONLY);
  ASSERT_TRUE(fd.valid()) << strerror(errno);
  EXPECT_EQ(fcntl(fd.get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(fcntl(fd.get(), F_GETFD) & FD_CLOEXEC, 0);
  struct stat st;
  ASSERT_EQ(fstat(fd.get(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the caller sees what it opened";
}

TEST_F(OpenNoWaitTest, AFifoWithNoReaderRefusesAWriter) {
  UniqueFd fd = OpenNoWait(fifo_, O_WRONLY);
  EXPECT_FALSE(fd.valid());
  EXPECT_EQ(errno, ENXIO);
}

TEST_F(OpenNoWaitTest, CreatesARegularFileWithItsMode) {
  std::string file = dir_ + "/new";
  UniqueFd fd = OpenNoWait(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_TRUE(fd.valid()) << strerror(errno);
  struct stat st;
  ASSERT_EQ(fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(write(fd.get(), "x", 1), 1);
  unlink(file.c_str());
}

}  // namespace
}  // namespace ember
