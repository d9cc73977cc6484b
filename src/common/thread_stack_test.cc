#include "src/common/thread_stack.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "src/common/testing/smaps.h"

namespace ember {
namespace {

TEST(ThreadStackTest, AThreadsStackIsAdvisedAgainstHugePages) {
  // (Recent kernels advise every MAP_STACK mapping so; 6.1 does not.)
  std::string after;
  std::thread([&] {
    int on_stack = 0;
    KeepStackInSmallPages();
    after = testing::VmFlags(&on_stack);
  }).join();
  EXPECT_NE(after.find("nh "), std::string::npos) << after;
}

}  // namespace
}  // namespace ember
