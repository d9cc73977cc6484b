#include "src/vmm/host.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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

// The guest-kernel patches' options change the guest's behaviour: only a
// PVM host may get them, and a guest that asked for them itself keeps them.
TEST(HostTest, GuestPatchOptionsOnlyOnPvm) {
  for (const char* option : {"pvmuser", "noint3selftest"}) {
    EXPECT_FALSE(absl::StrContains(AddHostBootArgs("console=ttyS0 ro", false), option));
    EXPECT_TRUE(absl::StrContains(AddHostBootArgs("console=ttyS0 ro", true), option));
    EXPECT_EQ(AddHostBootArgs(absl::StrCat("a ", option), false), absl::StrCat("a ", option));
  }
}

TEST(HostTest, KnowsHostMemory) {
  auto mib = HostMemoryMib();
  ASSERT_TRUE(mib.ok());
  EXPECT_GT(*mib, 64u);
}

TEST(HostTest, KnowsThePhysicalAddressWidth) {
  uint32_t bits = HostPhysicalAddressBits();
  EXPECT_GE(bits, 32u);
  EXPECT_LE(bits, 57u);  // five-level paging's 52, and then some
}

}  // namespace
}  // namespace ember
