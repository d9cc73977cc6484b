// src/vstate holds the state every device sees: guest memory and the
// buses that route port and MMIO accesses to devices. It may use
// src/common only.
//
// Guest physical memory: host mappings of guest RAM regions, reached only
// through range-checked accessors. A range that leaves a region is an error,
// never a pointer outside the mapping.
#pragma once

#include <cstdint>
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/common/huge_pages.h"

namespace ember {

struct MemoryRange {
  uint64_t guest_addr;
  uint64_t size;
};

struct GuestRegion {
  uint64_t guest_addr;
  uint64_t size;
  uint8_t* host;
};

class GuestMemory {
 public:
  // Opt-in same-page merging (`ember --merge-guest-memory`): a mergeable
  // mapping is advised MADV_MERGEABLE, so the host's KSM daemon (when
  // /sys/kernel/mm/ksm/run is 1) may back identical pages of many VMs with
  // one copy-on-write page. Off by default: a guest that writes to a merged
  // page takes a measurably slower copy-on-write fault, which lets it learn
  // whether another VM on the host holds the same page contents (cross-VM
  // page-merge timing side channels). The process-wide default below is
  // what Create and MapFile use unless told; Ember runs one VM a process
  // and main.cc sets it from the command line before any VM is built.
  static void SetMergeableByDefault(bool on);
  static bool mergeable_by_default();

  // Maps anonymous private memory for each range. Ranges must be non-empty,
  // page-aligned, sorted and disjoint. With `mergeable`, a host kernel
  // without KSM fails the call (madvise's EINVAL) instead of quietly
  // merging nothing.
  // `huge_pages` (machine-config.huge_pages): kTransparent advises the
  // ranges MADV_HUGEPAGE; k2M takes them from the host's hugetlbfs pool,
  // reserved whole at the mmap (an empty pool is an error here, not a
  // SIGBUS at the guest's first touch), so ranges must be 2 MiB aligned
  // and KSM, which never merges hugetlbfs pages, is refused.
  static absl::StatusOr<GuestMemory> Create(const std::vector<MemoryRange>& ranges,
                                            bool mergeable = mergeable_by_default(),
                                            HugePages huge_pages = HugePages::kNone);
  // Maps the regions from `fd` (one after another in the file), private:
  // pages load lazily and writes stay in this process (snapshot restore).
  // The file must be exactly as long as the regions together. hugetlbfs
  // pages cannot map a file: k2M is refused.
  // `hotplug_bytes` more follow them in the file (memory hotplug's region,
  // which the caller fills: AddHotplugRegion maps no file).
  static absl::StatusOr<GuestMemory> MapFile(const std::vector<MemoryRange>& ranges, int fd,
                                             bool mergeable = mergeable_by_default(),
                                             HugePages huge_pages = HugePages::kNone,
                                             uint64_t hotplug_bytes = 0);

  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // Host view of [addr, addr + len), which must lie inside one region.
  absl::StatusOr<std::span<uint8_t>> Slice(uint64_t addr, uint64_t len) const;
  // The same for advice to the host kernel (madvise) only: not counted as
  // written by the VMM, as a Slice is under dirty tracking.
  absl::StatusOr<std::span<uint8_t>> HostRange(uint64_t addr, uint64_t len) const;
  bool Contains(uint64_t addr, uint64_t len) const;

  absl::Status Read(uint64_t addr, std::span<uint8_t> out) const;
  absl::Status Write(uint64_t addr, std::span<const uint8_t> data) const;

  template <typename T>
  absl::Status WriteObj(uint64_t addr, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr, std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }
  template <typename T>
  absl::StatusOr<T> ReadObj(uint64_t addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status st = Read(addr, std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!st.ok()) return st;
    return value;
  }

  // Memory hotplug (virtio-mem): one region past RAM, in slots of
  // `slot_size` bytes that start unplugged. An unplugged slot is PROT_NONE
  // and outside guest memory for every accessor above, so no device can
  // be made to touch it. It is not among regions(): RAM's layout, KVM's
  // boot slots and snapshots stay as they were. Mapped as RAM is (huge
  // pages, merging, advice); `size` a multiple of `slot_size`, both of
  // host_page_size().
  absl::Status AddHotplugRegion(uint64_t guest_addr, uint64_t size, uint64_t slot_size);
  const GuestRegion* hotplug_region() const { return hotplug_ ? &*hotplug_ : nullptr; }
  uint64_t hotplug_slot_size() const { return hotplug_slot_size_; }
  // Opens slot `index` to the VMM (PROT_READ | PROT_WRITE) or closes it
  // (PROT_NONE): the caller gives KVM the slot after opening it and takes
  // it away before closing it.
  absl::Status SetHotplugSlot(size_t index, bool plugged) const;
  bool hotplug_slot_plugged(size_t index) const;
  // The first guest address past RAM and the hotplug region.
  uint64_t end() const;
  // KVM memory slots guest memory may take: a region's each, and the
  // hotplug region's slots (numbered after RAM's).
  uint32_t memory_slots() const;

  const std::vector<GuestRegion>& regions() const { return regions_; }
  HugePages huge_pages() const { return huge_pages_; }
  // The host page size under guest memory: 4 KiB, or 2 MiB with k2M.
  uint64_t host_page_size() const;
  // Gives the host back the pages of [addr, addr + len) (a balloon's
  // inflated or free pages); they read as zero afterwards, or, mapped from
  // a snapshot's memory file, as the file's bytes. With hugetlbfs pages
  // only the whole huge pages inside the range go back (the guest frees
  // 4 KiB pages, and a partly freed huge page must keep the rest), and
  // only on Linux 6.9 or later: before it, a dropped page's reservation is
  // lost and the guest could later fault on an empty pool. Counted as
  // written under dirty tracking. False for a range outside guest memory
  // or the host's refusal.
  bool Discard(uint64_t addr, uint64_t len) const;
  // Gives `host`, a part of a region that a new mapping replaced (a file
  // mapped over it, or the anonymous copy that replaced such a mapping),
  // the region's advice again: a new mapping starts without it. Best
  // effort: without it the guest runs the same.
  void AdviseReplaced(std::span<uint8_t> host) const;
  // Records that `host`, a part of a region, is mapped private from a file
  // (the kernel or initrd, ImageLoad): a page there the guest never wrote
  // reads the file's bytes, not zeros, whether or not the page cache holds
  // it, so ResidentPages counts it.
  void MarkFileMapped(std::span<uint8_t> host);

  // Diff snapshots: from now on every page handed out by Slice or written
  // by Write is recorded (the VMM's own writes, which KVM's dirty log does
  // not see). Reads through Read are not, nor empty ranges.
  void EnableDirtyTracking();
  bool dirty_tracking() const { return !dirty_.empty(); }
  // The recorded pages of region `index`, one bit per 4 KiB page, cleared.
  std::vector<uint64_t> TakeDirtyPages(size_t index) const;
  // Diff snapshots without tracking, as Firecracker's: the pages of region
  // `index` resident in host memory (mincore), one bit per 4 KiB page.
  // Every page the guest or the VMM touched is one, unless swapped out;
  // so is every page MarkFileMapped named.
  absl::StatusOr<std::vector<uint64_t>> ResidentPages(size_t index) const;
  // Bytes of guest RAM in all regions.
  uint64_t total_size() const;

 private:
  GuestMemory() = default;
  // Anonymous memory when fd < 0, else the file, private.
  static absl::StatusOr<GuestMemory> Map(const std::vector<MemoryRange>& ranges, int fd,
                                         bool mergeable, HugePages huge_pages);
  const GuestRegion* Find(uint64_t addr, uint64_t len) const;
  // The hotplug region, if the range lies in it on plugged slots only.
  const GuestRegion* FindHotplug(uint64_t addr, uint64_t len) const;
  // Same-page merging if asked, no fork's copy, and a name.
  absl::Status Advise(std::span<uint8_t> host) const;
  // Slice and HostRange: `written` counts the range as written by the VMM.
  absl::StatusOr<std::span<uint8_t>> Range(uint64_t addr, uint64_t len, bool written) const;
  void Unmap();

  void MarkDirty(const GuestRegion& r, uint64_t addr, uint64_t len) const;

  std::vector<GuestRegion> regions_;
  std::optional<GuestRegion> hotplug_;
  uint64_t hotplug_slot_size_ = 0;
  std::unique_ptr<std::atomic<bool>[]> hotplug_plugged_;  // a flag per slot
  bool mergeable_ = false;
  HugePages huge_pages_ = HugePages::kNone;
  bool discard_huge_pages_ = false;  // k2M, on a kernel where that is safe
  // Per region, a bit per page; empty when not tracking.
  std::vector<std::unique_ptr<std::atomic<uint64_t>[]>> dirty_;
  std::vector<std::span<uint8_t>> file_mapped_;
};

}  // namespace ember
