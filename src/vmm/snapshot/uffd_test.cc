// mem_backend Uffd without KVM: guest memory handed to the real example
// handler (ember-uffd-handler), which fills each page this process touches
// from the memory file, in 4 KiB pages or, with huge_pages "2M", whole
// 2 MiB hugetlbfs pages.
#include "src/vmm/snapshot/uffd.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "src/common/testing/huge_page_pool.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/snapshot/working_set.h"

extern char** environ;

namespace ember::snapshot {
namespace {

using ember::testing::HugePagePool;

constexpr uint64_t kMiB = 1 << 20;

// A byte that differs from one 4 KiB page of the file to the next and from
// one place in a page to the next.
uint8_t FileByte(uint64_t offset) { return static_cast<uint8_t>(offset / 4096 * 7 + offset % 251); }

class Handler {
 public:
  Handler(const std::string& socket, const std::string& mem_file,
          const std::vector<std::string>& extra = {}) {
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::string binary = EMBER_UFFD_HANDLER;
    std::vector<char*> argv = {binary.data(), const_cast<char*>(socket.c_str()),
                               const_cast<char*>(mem_file.c_str())};
    for (const std::string& arg : extra) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    output_ = fdopen(out[0], "r");
  }
  ~Handler() {
    Kill();
    if (output_) fclose(output_);
  }
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  std::string Line() {
    char line[4096];
    return output_ && fgets(line, sizeof(line), output_) ? line : "";
  }

 private:
  pid_t pid_ = -1;
  FILE* output_ = nullptr;
};

// Removes the test's files (an 8 MiB memory file among them) however it ends.
struct RemovedAtEnd {
  std::vector<std::string> paths;
  ~RemovedAtEnd() {
    for (const std::string& p : paths) std::remove(p.c_str());
  }
};

class UffdHandoverTest : public ::testing::TestWithParam<HugePages> {};

TEST_P(UffdHandoverTest, TheHandlerFillsEveryTouchedPageFromTheFile) {
  HugePagePool pool(GetParam() == HugePages::k2M ? 4 : 0);
  if (!pool.unavailable().empty()) GTEST_SKIP() << pool.unavailable();
  // Named by this process too: another tree's tests may share the directory.
  std::string prefix = ::testing::TempDir() + "/" + std::to_string(getpid());
  std::string sock = prefix + ".uffd-test.sock", file = prefix + ".uffd-test.mem";
  RemovedAtEnd cleanup{{sock, file}};
  {
    std::vector<char> bytes(8 * kMiB);
    for (uint64_t i = 0; i < bytes.size(); i++) bytes[i] = static_cast<char>(FileByte(i));
    std::ofstream(file, std::ios::binary).write(bytes.data(), bytes.size());
  }
  Handler handler(sock, file);
  ASSERT_NE(handler.Line().find("listening"), std::string::npos);
  // Two regions: the second starts 4 MiB into the file.
  absl::StatusOr<GuestMemory> mem =
      GuestMemory::Create({{0, 4 * kMiB}, {8 * kMiB, 4 * kMiB}}, false, GetParam());
  ASSERT_TRUE(mem.ok()) << mem.status();
  absl::StatusOr<UffdHandover> handover = HandOverToUffdHandler(*mem, sock);
  ASSERT_TRUE(handover.ok()) << handover.status();
  std::string regions = handler.Line();
  uint64_t page = GetParam() == HugePages::k2M ? 2 * kMiB : 4096;
  EXPECT_NE(regions.find("\"page_size\":" + std::to_string(page) + ","), std::string::npos)
      << regions;

  // Guest address, file offset: the first byte, the middle of a huge page,
  // the last byte of the first region, and the second region's pages.
  const std::pair<uint64_t, uint64_t> probes[] = {
      {0, 0},
      {3 * kMiB + 12345, 3 * kMiB + 12345},
      {4 * kMiB - 1, 4 * kMiB - 1},
      {8 * kMiB, 4 * kMiB},
      {10 * kMiB + 5 * 4096 + 17, 6 * kMiB + 5 * 4096 + 17},
      {12 * kMiB - 1, 8 * kMiB - 1},
  };
  // Read on another thread: a dead handler must fail the test, not hang it.
  auto reads = std::async(std::launch::async, [&] {
    std::vector<std::pair<uint8_t, uint8_t>> got;
    for (auto [addr, offset] : probes) {
      absl::StatusOr<uint8_t> b = mem->ReadObj<uint8_t>(addr);
      got.push_back({b.ok() ? *b : 0, FileByte(offset)});
    }
    return got;
  });
  if (reads.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    handover->uffd.reset();  // wakes the faulting read; the test fails below
    handover->connection.reset();
    FAIL() << "the handler never filled a page";
  }
  for (auto [got, want] : reads.get()) EXPECT_EQ(got, want);
  // With the handler gone, another 4 KiB page of a huge page it filled
  // reads without a fault: the whole 2 MiB came in one copy.
  if (GetParam() == HugePages::k2M) {
    handler.Kill();
    auto read = std::async(std::launch::async,
                           [&] { return mem->ReadObj<uint8_t>(3 * kMiB + 4096).value_or(0); });
    if (read.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      handover->uffd.reset();
      handover->connection.reset();
      FAIL() << "a page of a filled huge page faulted again";
    }
    EXPECT_EQ(read.get(), FileByte(3 * kMiB + 4096));
  }
}

// A working set's runs of 4 KiB pages, one from the middle of a huge page
// and one in the second region, copied in before any fault: on hugetlbfs
// memory the handler widens each run to the whole huge pages around it.
TEST(UffdWorkingSetTest, RunsAreWidenedToWholeHugePages) {
  HugePagePool pool(4);
  if (!pool.unavailable().empty()) GTEST_SKIP() << pool.unavailable();
  // Named by this process too: another tree's tests may share the directory.
  std::string prefix = ::testing::TempDir() + "/" + std::to_string(getpid());
  std::string sock = prefix + ".uffd-ws.sock", file = prefix + ".uffd-ws.mem";
  std::string state_path = prefix + ".uffd-ws.snap", set_path = prefix + ".uffd-ws.ws";
  RemovedAtEnd cleanup{{sock, file, state_path, set_path}};
  {
    std::vector<char> bytes(8 * kMiB);
    for (uint64_t i = 0; i < bytes.size(); i++) bytes[i] = static_cast<char>(FileByte(i));
    std::ofstream(file, std::ios::binary).write(bytes.data(), bytes.size());
  }
  const std::vector<MemoryRange> ranges = {{0, 4 * kMiB}, {8 * kMiB, 4 * kMiB}};
  SnapshotState state;
  state.config_json = "{}";
  state.memory = ranges;
  state.machine.vcpus.resize(1);  // a state file holds at least one
  std::vector<uint8_t> encoded = EncodeSnapshot(state);
  std::ofstream(state_path, std::ios::binary)
      .write(reinterpret_cast<const char*>(encoded.data()), encoded.size());
  absl::StatusOr<SnapshotState> decoded = DecodeSnapshot(encoded);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  WorkingSet set{decoded->id, {{(2 * kMiB + 12 * 4096) / 4096, 3}, {(6 * kMiB) / 4096 + 7, 1}}};
  ASSERT_TRUE(WriteWorkingSet(set_path, set).ok());

  Handler handler(sock, file, {"--working-set", set_path, "--snapshot", state_path});
  ASSERT_NE(handler.Line().find("listening"), std::string::npos);
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create(ranges, false, HugePages::k2M);
  ASSERT_TRUE(mem.ok()) << mem.status();
  absl::StatusOr<UffdHandover> handover = HandOverToUffdHandler(*mem, sock);
  ASSERT_TRUE(handover.ok()) << handover.status();
  ASSERT_NE(handler.Line().find("got the userfaultfd"), std::string::npos);
  ASSERT_NE(handler.Line().find("working set of 4 pages copied"), std::string::npos);
  // No handler from here on: what the working set brought in must be there.
  handler.Kill();
  const std::pair<uint64_t, uint64_t> present[] = {
      {2 * kMiB, 2 * kMiB},                      // the first run's huge page, its start
      {4 * kMiB - 1, 4 * kMiB - 1},              // and its end
      {8 * kMiB + 2 * kMiB + 5, 6 * kMiB + 5},   // the second run's huge page
  };
  auto reads = std::async(std::launch::async, [&] {
    std::vector<std::pair<uint8_t, uint8_t>> got;
    for (auto [addr, offset] : present) {
      got.push_back({mem->ReadObj<uint8_t>(addr).value_or(0), FileByte(offset)});
    }
    return got;
  });
  if (reads.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    handover->uffd.reset();
    handover->connection.reset();
    FAIL() << "a page of the working set's huge pages was not copied in";
  }
  for (auto [got, want] : reads.get()) EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(PageSizes, UffdHandoverTest,
                         ::testing::Values(HugePages::kNone, HugePages::k2M),
                         [](const auto& info) {
                           return info.param == HugePages::k2M ? "Hugetlbfs2M" : "SmallPages";
                         });

}  // namespace
}  // namespace ember::snapshot
