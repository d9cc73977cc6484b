#include "src/vmm/host.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

namespace ember {
namespace {

TEST(HostTest, DetectsPvmByItsModuleDirectory) {
  char dir[] = "/tmp/ember-host-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  EXPECT_TRUE(IsPvmHost(dir));
  EXPECT_FALSE(IsPvmHost(std::string(dir) + "/missing"));
  // Without sysfs, the CPU decides.
  EXPECT_EQ(IsPvmHost("/nonexistent/module/kvm_pvm"), !CpuHasHardwareVirtualization());
  rmdir(dir);
}

TEST(HostTest, AddsPvmArgsOnlyOnPvmAndOnlyOnce) {
  EXPECT_EQ(AddHostBootArgs("console=ttyS0", false), "console=ttyS0");
  std::string once = AddHostBootArgs("console=ttyS0", true);
  EXPECT_EQ(once, std::string("console=ttyS0 ") + kPvmGuestArgs);
  EXPECT_EQ(AddHostBootArgs(once, true), once);
  EXPECT_EQ(AddHostBootArgs("", true), kPvmGuestArgs);
}

TEST(HostTest, KnowsHostMemory) {
  auto mib = HostMemoryMib();
  ASSERT_TRUE(mib.ok());
  EXPECT_GT(*mib, 64u);
}

}  // namespace
}  // namespace ember
