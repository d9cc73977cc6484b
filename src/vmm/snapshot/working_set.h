// A snapshot's working set, Ember's extension to Firecracker's snapshots
// (docs/working-set.md): the guest pages a restored guest touched while it
// served its first request, saved beside the snapshot so that a later
// restore loads them first, in bulk (the idea published as REAP and
// FaaSnap). Pages are 4 KiB pages of the snapshot's memory file (its
// regions one after another), kept as sorted, disjoint runs.
//
// The file names the snapshot it belongs to (SnapshotId) and a restore
// refuses a list from another one. A wrong list could only cost time,
// never correctness: pages always come from the snapshot's own memory.
//   "EMBERWSS" | u32 version | u64 state payload length | u32 state CRC-32 |
//   u64 guest memory bytes | u32 run count | runs: u64 first page,
//   u64 page count | u32 CRC-32 of everything before it
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/vstate/guest_memory.h"

namespace ember::snapshot {

// Which snapshot: its state file (payload length and checksum, from the
// header, so reading it costs nothing more) and its guest memory size.
struct SnapshotId {
  uint64_t state_length = 0;
  uint32_t state_crc = 0;
  uint64_t memory_bytes = 0;
  friend bool operator==(const SnapshotId&, const SnapshotId&) = default;
};

struct PageRun {
  uint64_t first;  // page index in the memory file
  uint64_t count;
  friend bool operator==(const PageRun&, const PageRun&) = default;
};

struct WorkingSet {
  SnapshotId snapshot;
  std::vector<PageRun> runs;  // sorted, disjoint, inside the memory
  uint64_t pages() const;
};

inline constexpr uint64_t kWorkingSetPage = 4096;
// Larger files are refused before they are read.
inline constexpr uint64_t kMaxWorkingSetFile = 64 << 20;

std::vector<uint8_t> EncodeWorkingSet(const WorkingSet& set);
// Refuses a damaged file (magic, version, checksum, length) and runs that
// are empty, unsorted, overlapping or beyond the memory.
absl::StatusOr<WorkingSet> DecodeWorkingSet(std::span<const uint8_t> file);

// Reads `path` and refuses a list recorded for another snapshot than
// `expected`; messages name the path and say what differs.
absl::StatusOr<WorkingSet> ReadWorkingSet(const std::string& path, const SnapshotId& expected);
// Writes `path` whole or not at all (a temporary file renamed into place).
absl::Status WriteWorkingSet(const std::string& path, const WorkingSet& set);

// The pages of `mem` this process has in its page tables now (the
// present bits of /proc/self/pagemap): with a memory file mapped private
// or filled through userfaultfd, the pages the guest and Ember touched
// since the restore. Runs are in memory-file pages.
absl::StatusOr<std::vector<PageRun>> PresentPages(const GuestMemory& mem);

// Loads the set's pages of a memory file mapped private (the File
// backend) into this process's page tables, one madvise per run
// (MADV_POPULATE_READ; MADV_WILLNEED, which only reads ahead into the page
// cache, where the kernel lacks it). Returns the pages asked for.
absl::StatusOr<uint64_t> PrefetchMapped(const GuestMemory& mem, const WorkingSet& set);

// Turns one bit per page (bit i of word i / 64 for page i) into runs.
std::vector<PageRun> RunsOfBits(std::span<const uint64_t> bits, uint64_t pages);

}  // namespace ember::snapshot
