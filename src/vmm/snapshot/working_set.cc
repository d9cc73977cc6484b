#include "src/vmm/snapshot/working_set.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/byte_codec.h"
#include "src/common/errno_status.h"
#include "src/common/open_no_wait.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/vmm/snapshot/state_file.h"

namespace ember::snapshot {
namespace {

constexpr char kMagic[8] = {'E', 'M', 'B', 'E', 'R', 'W', 'S', 'S'};
constexpr uint32_t kVersion = 1;
// Magic, version, the snapshot's id, the run count; the checksum after.
constexpr size_t kFixedSize = sizeof(kMagic) + 4 + 8 + 4 + 8 + 4;
constexpr size_t kRunSize = 16;
// /proc/self/pagemap: one u64 per page, bit 63 "present".
constexpr uint64_t kPresent = uint64_t{1} << 63;
constexpr size_t kPagemapBatch = 4096;

absl::Status Bad(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("working set file: ", why));
}

std::string Describe(const SnapshotId& id) {
  return absl::StrCat("state ", id.state_length, " bytes with CRC-32 ", absl::Hex(id.state_crc),
                      ", ", id.memory_bytes >> 20, " MiB of memory");
}

}  // namespace

uint64_t WorkingSet::pages() const {
  uint64_t n = 0;
  for (const PageRun& r : runs) n += r.count;
  return n;
}

std::vector<uint8_t> EncodeWorkingSet(const WorkingSet& set) {
  ByteWriter w;
  w.Raw({reinterpret_cast<const uint8_t*>(kMagic), sizeof(kMagic)});
  w.U32(kVersion);
  w.U64(set.snapshot.state_length);
  w.U32(set.snapshot.state_crc);
  w.U64(set.snapshot.memory_bytes);
  w.U32(static_cast<uint32_t>(set.runs.size()));
  for (const PageRun& r : set.runs) {
    w.U64(r.first);
    w.U64(r.count);
  }
  w.U32(Crc32(w.bytes()));
  return w.Take();
}

absl::StatusOr<WorkingSet> DecodeWorkingSet(std::span<const uint8_t> file) {
  if (file.size() < kFixedSize + 4 || std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0) {
    return Bad("not an Ember working set (bad magic or shorter than its header)");
  }
  if (file.size() > kMaxWorkingSetFile) return Bad("larger than 64 MiB");
  ByteReader checksum(file.subspan(file.size() - 4));
  uint32_t crc = 0;
  checksum.U32(&crc);
  std::span<const uint8_t> body = file.first(file.size() - 4);
  ByteReader r(body.subspan(sizeof(kMagic)));
  uint32_t version = 0;
  r.U32(&version);
  if (version != kVersion) {
    return Bad(absl::StrCat("version ", version, "; this Ember reads version ", kVersion));
  }
  if (Crc32(body) != crc) return Bad("checksum mismatch: the file is truncated or corrupted");
  WorkingSet set;
  uint32_t n = 0;
  r.U64(&set.snapshot.state_length);
  r.U32(&set.snapshot.state_crc);
  r.U64(&set.snapshot.memory_bytes);
  r.Count(&n, UINT32_MAX, kRunSize);
  uint64_t memory_pages = set.snapshot.memory_bytes / kWorkingSetPage;
  set.runs.reserve(n);
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    PageRun run;
    r.U64(&run.first);
    r.U64(&run.count);
    uint64_t prev_end = set.runs.empty() ? 0 : set.runs.back().first + set.runs.back().count;
    if (run.count == 0 || run.first < prev_end || run.first > memory_pages ||
        run.count > memory_pages - run.first) {
      r.Fail(absl::StrCat("run ", i, " (pages ", run.first, " +", run.count,
                          ") is empty, out of order or beyond the ", memory_pages,
                          " pages of memory"));
    } else {
      set.runs.push_back(run);
    }
  }
  RETURN_IF_ERROR(r.Finish("working set file"));
  return set;
}

absl::StatusOr<WorkingSet> ReadWorkingSet(const std::string& path, const SnapshotId& expected) {
  UniqueFd fd = OpenNoWait(path, O_RDONLY);
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("working set ", path));
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > kMaxWorkingSetFile) {
    return absl::InvalidArgumentError(
        absl::StrCat("working set ", path, " is not a regular file of at most 64 MiB"));
  }
  std::vector<uint8_t> bytes(st.st_size);
  if (pread(fd.get(), bytes.data(), bytes.size(), 0) != st.st_size) {
    return ErrnoStatus(absl::StrCat("reading working set ", path));
  }
  absl::StatusOr<WorkingSet> set = DecodeWorkingSet(bytes);
  if (!set.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", set.status().message()));
  }
  if (!(set->snapshot == expected)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "working set ", path, " was recorded for another snapshot (", Describe(set->snapshot),
        "); this snapshot has ", Describe(expected)));
  }
  return set;
}

absl::Status WriteWorkingSet(const std::string& path, const WorkingSet& set) {
  std::vector<uint8_t> bytes = EncodeWorkingSet(set);
  std::string tmp = path + ".tmp";
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("working set ", tmp));
  bool written = ::write(fd.get(), bytes.data(), bytes.size()) ==
                 static_cast<ssize_t>(bytes.size());
  if (!written || rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status st = ErrnoStatus(absl::StrCat(written ? "renaming to " : "writing ", path));
    unlink(tmp.c_str());
    return st;
  }
  return absl::OkStatus();
}

std::vector<PageRun> RunsOfBits(std::span<const uint64_t> bits, uint64_t pages) {
  std::vector<PageRun> runs;
  for (uint64_t p = 0; p < pages; p++) {
    if (!(bits[p / 64] >> (p % 64) & 1)) continue;
    if (!runs.empty() && runs.back().first + runs.back().count == p) {
      runs.back().count++;
    } else {
      runs.push_back({p, 1});
    }
  }
  return runs;
}

absl::StatusOr<std::vector<PageRun>> PresentPages(const GuestMemory& mem) {
  // read and lseek, not pread: the VMM thread's seccomp filter has those.
  UniqueFd fd(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("/proc/self/pagemap");
  std::vector<uint64_t> bits((mem.total_size() / kWorkingSetPage + 63) / 64);
  std::vector<uint64_t> entries(kPagemapBatch);
  uint64_t file_page = 0;
  for (const GuestRegion& region : mem.regions()) {
    uint64_t pages = region.size / kWorkingSetPage;
    uint64_t first = reinterpret_cast<uint64_t>(region.host) / kWorkingSetPage;
    for (uint64_t done = 0; done < pages;) {
      size_t n = std::min<uint64_t>(kPagemapBatch, pages - done);
      size_t bytes = n * sizeof(uint64_t);
      if (lseek(fd.get(), static_cast<off_t>((first + done) * sizeof(uint64_t)), SEEK_SET) < 0 ||
          ::read(fd.get(), entries.data(), bytes) != static_cast<ssize_t>(bytes)) {
        return ErrnoStatus("reading /proc/self/pagemap");
      }
      for (size_t i = 0; i < n; i++) {
        uint64_t p = file_page + done + i;
        if (entries[i] & kPresent) bits[p / 64] |= uint64_t{1} << (p % 64);
      }
      done += n;
    }
    file_page += pages;
  }
  return RunsOfBits(bits, file_page);
}

absl::StatusOr<uint64_t> PrefetchMapped(const GuestMemory& mem, const WorkingSet& set) {
  if (set.snapshot.memory_bytes != mem.total_size()) {
    return absl::InvalidArgumentError("the working set is for another memory size");
  }
  int advice = MADV_POPULATE_READ;
  uint64_t region_first = 0;  // the region's first page in the file
  auto region = mem.regions().begin();
  for (const PageRun& run : set.runs) {
    // A run may cross from one region into the next.
    for (uint64_t p = run.first, end = run.first + run.count; p < end;) {
      while (p >= region_first + region->size / kWorkingSetPage) {
        region_first += region->size / kWorkingSetPage;
        ++region;
      }
      uint64_t n = std::min(end, region_first + region->size / kWorkingSetPage) - p;
      uint8_t* host = region->host + (p - region_first) * kWorkingSetPage;
      if (madvise(host, n * kWorkingSetPage, advice) != 0) {
        if (errno != EINVAL || advice == MADV_WILLNEED) return ErrnoStatus("madvise (prefetch)");
        advice = MADV_WILLNEED;
        continue;
      }
      p += n;
    }
  }
  return set.pages();
}

}  // namespace ember::snapshot
