#include "src/vmm/snapshot/working_set.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace ember::snapshot {
namespace {

constexpr SnapshotId kId = {4242, 0xdeadbeef, 128 << 20};

WorkingSet Sample() { return {kId, {{0, 16}, {100, 1}, {32767, 1}}}; }

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          (name + "." + std::to_string(getpid())))
      .string();
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

TEST(WorkingSet, RoundTripsThroughAFile) {
  std::string path = TempPath("ws-roundtrip");
  ASSERT_TRUE(WriteWorkingSet(path, Sample()).ok());
  absl::StatusOr<WorkingSet> back = ReadWorkingSet(path, kId);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->snapshot, kId);
  EXPECT_EQ(back->runs, Sample().runs);
  EXPECT_EQ(back->pages(), 18u);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::remove(path.c_str());
}

TEST(WorkingSet, AnEmptySetIsValid) {
  absl::StatusOr<WorkingSet> back = DecodeWorkingSet(EncodeWorkingSet({kId, {}}));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->runs.empty());
}

TEST(WorkingSet, AListFromAnotherSnapshotIsRefused) {
  std::string path = TempPath("ws-other");
  ASSERT_TRUE(WriteWorkingSet(path, Sample()).ok());
  for (SnapshotId other : {SnapshotId{4242, 0xdeadbeee, 128 << 20},
                           SnapshotId{4243, 0xdeadbeef, 128 << 20},
                           SnapshotId{4242, 0xdeadbeef, 1 << 30}}) {
    absl::StatusOr<WorkingSet> back = ReadWorkingSet(path, other);
    ASSERT_FALSE(back.ok());
    EXPECT_EQ(back.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(back.status().message().find("recorded for another snapshot"), std::string::npos)
        << back.status();
  }
  std::remove(path.c_str());
}

TEST(WorkingSet, TruncatedOrExtendedFilesAreRefused) {
  std::vector<uint8_t> file = EncodeWorkingSet(Sample());
  for (size_t n = 0; n < file.size(); n++) {
    std::vector<uint8_t> cut(file.begin(), file.begin() + n);
    EXPECT_FALSE(DecodeWorkingSet(cut).ok()) << n;
  }
  std::vector<uint8_t> longer = file;
  longer.push_back(0);
  EXPECT_FALSE(DecodeWorkingSet(longer).ok());
}

TEST(WorkingSet, EveryFlippedByteIsRefused) {
  std::vector<uint8_t> file = EncodeWorkingSet(Sample());
  for (size_t i = 0; i < file.size(); i++) {
    std::vector<uint8_t> bad = file;
    bad[i] ^= 0x40;
    EXPECT_FALSE(DecodeWorkingSet(bad).ok()) << i;
  }
}

TEST(WorkingSet, RunsMustBeSortedDisjointNonEmptyAndInsideMemory) {
  uint64_t pages = kId.memory_bytes / kWorkingSetPage;
  for (std::vector<PageRun> runs : std::vector<std::vector<PageRun>>{
           {{10, 0}},                          // empty
           {{10, 5}, {12, 1}},                 // overlapping
           {{10, 5}, {2, 1}},                  // out of order
           {{pages - 1, 2}},                   // past the end
           {{pages, 1}},                       // past the end
           {{1, UINT64_MAX}},                  // wraps
       }) {
    absl::StatusOr<WorkingSet> back = DecodeWorkingSet(EncodeWorkingSet({kId, runs}));
    EXPECT_FALSE(back.ok()) << runs.front().first << "+" << runs.front().count;
  }
  EXPECT_TRUE(DecodeWorkingSet(EncodeWorkingSet({kId, {{0, pages}}})).ok());
}

TEST(WorkingSet, AHugeRunCountIsRefusedWithoutAllocating) {
  // A header claiming 2^32-1 runs with none following: refused by length.
  std::vector<uint8_t> file = EncodeWorkingSet({kId, {}});
  // The run count is the u32 just before the checksum.
  for (size_t i = file.size() - 8; i < file.size() - 4; i++) file[i] = 0xff;
  EXPECT_FALSE(DecodeWorkingSet(file).ok());
}

TEST(WorkingSet, OversizedAndNonRegularFilesAreRefused) {
  std::string path = TempPath("ws-big");
  {
    std::ofstream out(path, std::ios::binary);
    out.seekp(static_cast<std::streamoff>(kMaxWorkingSetFile));  // sparse
    out.put(0);
  }
  absl::StatusOr<WorkingSet> back = ReadWorkingSet(path, kId);
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("at most 64 MiB"), std::string::npos) << back.status();
  std::remove(path.c_str());
  EXPECT_FALSE(ReadWorkingSet(std::filesystem::temp_directory_path().string(), kId).ok());
  EXPECT_FALSE(ReadWorkingSet(TempPath("ws-missing"), kId).ok());
  WriteBytes(path, {'n', 'o', 'p', 'e'});
  back = ReadWorkingSet(path, kId);
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find(path), std::string::npos) << back.status();
  std::remove(path.c_str());
}

TEST(WorkingSet, RunsOfBits) {
  std::vector<uint64_t> bits = {0b1011, uint64_t{1} << 63, 1};
  std::vector<PageRun> runs = RunsOfBits(bits, 130);
  EXPECT_EQ(runs, (std::vector<PageRun>{{0, 2}, {3, 1}, {127, 2}}));
}

TEST(WorkingSet, PresentPagesSeesTouchedPagesAcrossRegions) {
  absl::StatusOr<GuestMemory> mem =
      GuestMemory::Create({{0, 64 * kWorkingSetPage}, {1 << 20, 32 * kWorkingSetPage}});
  ASSERT_TRUE(mem.ok()) << mem.status();
  const std::vector<GuestRegion>& r = mem->regions();
  r[0].host[5 * kWorkingSetPage] = 1;
  r[0].host[63 * kWorkingSetPage] = 1;
  r[1].host[0] = 1;
  r[1].host[31 * kWorkingSetPage + 7] = 1;
  absl::StatusOr<std::vector<PageRun>> runs = PresentPages(*mem);
  ASSERT_TRUE(runs.ok()) << runs.status();
  EXPECT_EQ(*runs, (std::vector<PageRun>{{5, 1}, {63, 2}, {95, 1}}));
}

TEST(WorkingSet, PrefetchMappedPopulatesTheRunsOfAPrivateFileMapping) {
  std::string path = TempPath("ws-mem");
  WriteBytes(path, std::vector<uint8_t>(96 * kWorkingSetPage, 7));
  FILE* f = std::fopen(path.c_str(), "r");
  ASSERT_NE(f, nullptr);
  absl::StatusOr<GuestMemory> mem = GuestMemory::MapFile(
      {{0, 64 * kWorkingSetPage}, {1 << 20, 32 * kWorkingSetPage}}, fileno(f));
  ASSERT_TRUE(mem.ok()) << mem.status();
  // The second run crosses from the first region into the second.
  WorkingSet set = {{1, 2, 96 * kWorkingSetPage}, {{3, 2}, {62, 4}}};
  absl::StatusOr<uint64_t> n = PrefetchMapped(*mem, set);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 6u);
  absl::StatusOr<std::vector<PageRun>> runs = PresentPages(*mem);
  ASSERT_TRUE(runs.ok()) << runs.status();
  // The kernel may map pages around these too.
  for (uint64_t page : {3, 4, 62, 63, 64, 65}) {
    bool found = false;
    for (const PageRun& run : *runs) found |= page >= run.first && page < run.first + run.count;
    EXPECT_TRUE(found) << page;
  }
  set.snapshot.memory_bytes = 1 << 20;
  EXPECT_FALSE(PrefetchMapped(*mem, set).ok());
  std::fclose(f);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ember::snapshot
