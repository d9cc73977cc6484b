#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "src/seccomp/compiler.h"
#include "src/seccomp/filter_file.h"
#include "src/seccomp/seccomp.h"
#include "src/common/exit_code.h"

namespace ember::seccomp {
namespace {

std::string ReadPolicy() {
  std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/resources/seccomp/x86_64.json");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

constexpr char kSmallPolicy[] = R"({
  "vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
    {"syscall": "write", "comment": "c"},
    {"syscall": "exit_group", "comment": "c"},
    {"syscall": "ioctl", "comment": "c",
     "args": [{"index": 1, "type": "dword", "op": "eq", "val": "KVM_RUN|0x1"}]},
    {"syscall": "mmap", "comment": "c",
     "args": [{"index": 2, "type": "dword", "op": "masked_eq", "mask": "PROT_EXEC", "val": 0}]}]},
  "api": {"default_action": "trap", "filter_action": "allow", "filter": []},
  "vcpu": {"default_action": "trap", "filter_action": "allow", "filter": []}
})";

TEST(SeccompCompiler, BuiltInPolicyHasEveryThreadKind) {
  absl::StatusOr<FilterMap> filters = CompilePolicy(ReadPolicy());
  ASSERT_TRUE(filters.ok()) << filters.status();
  for (const char* kind : {"vmm", "api", "vcpu"}) {
    ASSERT_TRUE(filters->count(kind)) << kind;
    EXPECT_GT((*filters)[kind].size(), 10u) << kind;
  }
  // What the build embeds is what the policy compiles to.
  absl::StatusOr<FilterMap> embedded = ParseFilters(DefaultFilters());
  ASSERT_TRUE(embedded.ok()) << embedded.status();
  EXPECT_EQ(SerializeFilters(*embedded), SerializeFilters(*filters));
}

TEST(SeccompCompiler, CountsDistinctSyscalls) {
  absl::StatusOr<std::map<std::string, int>> counts = CountAllowedSyscalls(kSmallPolicy);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ((*counts)["vmm"], 4);
  EXPECT_EQ((*counts)["api"], 0);
}

TEST(SeccompCompiler, BadPoliciesNameTheField) {
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "no_such_call", "comment": "c"}]}})",
       "vmm.filter[0].syscall: unknown system call 'no_such_call'"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "read"}]}})",
       "vmm.filter[0].comment"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "read", "comment": ""}]}})",
       "must say who needs the call"},
      {R"({"vmm": {"default_action": "deny", "filter_action": "allow", "filter": []}})",
       "vmm.default_action: 'deny' is not"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "ioctl", "comment": "c", "args": [
            {"index": 1, "type": "dword", "op": "eq", "val": "KVM_NOPE"}]}]}})",
       "vmm.filter[0].args[0].val: unknown symbol 'KVM_NOPE'"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "ioctl", "comment": "c", "args": [
            {"index": 6, "type": "dword", "op": "eq", "val": 1}]}]}})",
       "vmm.filter[0].args[0].index"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "ioctl", "comment": "c", "args": [
            {"index": 1, "type": "dword", "op": "like", "val": 1}]}]}})",
       "unknown op 'like'"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "ioctl", "comment": "c", "args": [
            {"index": 1, "type": "dword", "op": "eq", "val": 4294967296}]}]}})",
       "does not fit a dword"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
          {"syscall": "read", "comment": "c", "extra": 1}]}})",
       "unknown field 'extra'"},
      {R"({"vmm": {"default_action": "trap", "filter_action": "allow"}})", "vmm.filter"},
      {R"({"vmm": 3})", "vmm: must be an object"},
      {R"({"vmm": )", "malformed JSON"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<FilterMap> filters = CompilePolicy(c.json);
    ASSERT_FALSE(filters.ok()) << c.json;
    EXPECT_NE(filters.status().message().find(c.message), std::string::npos)
        << filters.status() << " lacks " << c.message;
  }
}

TEST(SeccompFilterFile, RoundTripsAndRefusesDamage) {
  absl::StatusOr<FilterMap> filters = CompilePolicy(kSmallPolicy);
  ASSERT_TRUE(filters.ok()) << filters.status();
  std::vector<uint8_t> bytes = SerializeFilters(*filters);
  absl::StatusOr<FilterMap> back = ParseFilters(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(SerializeFilters(*back), bytes);
  // Every truncation is refused, and so is one byte too many.
  for (size_t n = 0; n < bytes.size(); n++) {
    EXPECT_FALSE(ParseFilters(std::span(bytes.data(), n)).ok()) << n;
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(ParseFilters(longer).ok());
  std::vector<uint8_t> bad_version = bytes;
  bad_version[8] = 7;
  EXPECT_NE(ParseFilters(bad_version).status().message().find("version 7"), std::string::npos);
  // A program longer than the kernel takes.
  FilterMap huge = {{"vmm", BpfProgram(BPF_MAXINSNS + 1)}};
  EXPECT_FALSE(ParseFilters(SerializeFilters(huge)).ok());
}

TEST(SeccompFilters, RefusesASetWithoutEveryThreadKind) {
  FilterMap filters = {{"vmm", {}}, {"api", {}}};
  absl::Status st = UseFilters(filters);
  EXPECT_NE(st.message().find("none for the 'vcpu' thread"), std::string::npos) << st;
}

TEST(SeccompFilters, SyscallNames) {
  EXPECT_STREQ(SyscallName(SYS_read), "read");
  EXPECT_STREQ(SyscallName(SYS_getppid), "getppid");
  EXPECT_EQ(SyscallName(-1), nullptr);
  EXPECT_EQ(SyscallName(1 << 20), nullptr);
}

// The installed filter really stops a call: in a child process, so that
// the test process stays unfiltered.
TEST(SeccompFiltersDeathTest, DeniedCallEndsTheProcessWith148) {
  absl::StatusOr<FilterMap> filters = CompilePolicy(ReadPolicy());
  ASSERT_TRUE(filters.ok()) << filters.status();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        InstallDenialHandler();
        if (!UseFilters(*filters).ok() || !InstallThreadFilter("vcpu").ok()) _exit(1);
        syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
        _exit(0);
      },
      testing::ExitedWithCode(kExitBadSyscall),
      "the vcpu thread's filter denied system call 41 \\(socket\\)");
}

// A Diff snapshot without track_dirty_pages asks mincore which guest pages
// are in memory, on the VMM thread (GuestMemory::ResidentPages).
TEST(SeccompFiltersDeathTest, TheVmmThreadMayAskWhichPagesAreResident) {
  absl::StatusOr<FilterMap> filters = CompilePolicy(ReadPolicy());
  ASSERT_TRUE(filters.ok()) << filters.status();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  static_cast<char*>(page)[0] = 1;
  EXPECT_EXIT(
      {
        InstallDenialHandler();
        if (!UseFilters(*filters).ok() || !InstallThreadFilter("vmm").ok()) _exit(1);
        unsigned char resident = 0;
        _exit(mincore(page, 4096, &resident) == 0 && (resident & 1) ? 0 : 2);
      },
      testing::ExitedWithCode(0), "");
  munmap(page, 4096);
}

}  // namespace
}  // namespace ember::seccomp
