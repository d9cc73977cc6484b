#include "src/vstate/guest_memory.h"

#include <linux/mman.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>

#include <utility>

#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

namespace ember {
namespace {
constexpr uint64_t kPageSize = 4096;
std::atomic<bool> g_mergeable_by_default{false};

// `size` bytes of address space on a 2 MiB boundary, reserved (PROT_NONE)
// for a mapping put over it with MAP_FIXED: KVM maps a memory slot with
// huge pages only where host and guest addresses agree modulo 2 MiB, and
// only kernels from 6.7 place large anonymous mappings so by themselves.
void* ReserveAligned(uint64_t size) {
  uint64_t span = size + kHugePageBytes;
  void* p = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return p;
  uintptr_t start = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  if (aligned > start) munmap(p, aligned - start);
  if (start + span > aligned + size) {
    munmap(reinterpret_cast<void*>(aligned + size), start + span - (aligned + size));
  }
  return reinterpret_cast<void*>(aligned);
}

// Before Linux 6.9, MADV_DONTNEED on private hugetlbfs memory loses the
// page's reservation: another process may take the freed page, and the
// guest's next touch of it is a SIGBUS.
bool HugetlbDiscardKeepsReservation() {
  struct utsname u;
  int major = 0, minor = 0;
  if (uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 9);
}
}  // namespace

void GuestMemory::SetMergeableByDefault(bool on) { g_mergeable_by_default = on; }
bool GuestMemory::mergeable_by_default() { return g_mergeable_by_default; }

absl::StatusOr<GuestMemory> GuestMemory::Create(const std::vector<MemoryRange>& ranges,
                                                bool mergeable, HugePages huge_pages) {
  return Map(ranges, -1, mergeable, huge_pages);
}

absl::StatusOr<GuestMemory> GuestMemory::MapFile(const std::vector<MemoryRange>& ranges, int fd,
                                                 bool mergeable, HugePages huge_pages,
                                                 uint64_t hotplug_bytes) {
  if (huge_pages == HugePages::k2M) {
    return absl::InvalidArgumentError(
        "huge_pages \"2M\": hugetlbfs pages cannot map a memory file");
  }
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus("the memory file");
  uint64_t total = hotplug_bytes;
  for (const MemoryRange& r : ranges) total += r.size;
  if (static_cast<uint64_t>(st.st_size) != total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the memory file is %d bytes; the snapshot's guest memory is %d", st.st_size, total));
  }
  return Map(ranges, fd, mergeable, huge_pages);
}

absl::StatusOr<GuestMemory> GuestMemory::Map(const std::vector<MemoryRange>& ranges, int fd,
                                             bool mergeable, HugePages huge_pages) {
  bool hugetlb = huge_pages == HugePages::k2M;
  if (hugetlb && mergeable) {
    return absl::InvalidArgumentError(
        "--merge-guest-memory: KSM never merges hugetlbfs pages; use huge_pages \"None\" or "
        "\"Transparent\"");
  }
  GuestMemory mem;
  mem.mergeable_ = mergeable;
  mem.huge_pages_ = huge_pages;
  // Decided here: the VMM thread's seccomp filter has no uname.
  mem.discard_huge_pages_ = hugetlb && HugetlbDiscardKeepsReservation();
  uint64_t align = mem.host_page_size();
  uint64_t prev_end = 0, file_offset = 0;
  for (const MemoryRange& r : ranges) {
    if (r.size == 0 || r.guest_addr % align || r.size % align || r.guest_addr < prev_end ||
        r.guest_addr + r.size < r.guest_addr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bad guest memory range [%#x, +%#x)", r.guest_addr, r.size));
    }
    prev_end = r.guest_addr + r.size;
    // hugetlbfs reserves its pages now, so that a short pool fails here;
    // its mappings are 2 MiB aligned by themselves.
    int flags = MAP_PRIVATE | (fd < 0 ? MAP_ANONYMOUS : 0) |
                (hugetlb ? MAP_HUGETLB | MAP_HUGE_2MB : MAP_NORESERVE | MAP_FIXED);
    void* at = hugetlb ? nullptr : ReserveAligned(r.size);
    if (at == MAP_FAILED) {
      return ErrnoStatus(absl::StrFormat("reserving %d MiB for guest memory", r.size >> 20));
    }
    void* host = mmap(at, r.size, PROT_READ | PROT_WRITE, flags, fd,
                      fd < 0 ? 0 : static_cast<off_t>(file_offset));
    if (host == MAP_FAILED && at != nullptr) munmap(at, r.size);
    if (host == MAP_FAILED && hugetlb) {
      return ErrnoStatus(absl::StrFormat(
          "huge_pages \"2M\": %d MiB of guest memory from the host's hugetlbfs pool (see "
          "HugePages_Free in /proc/meminfo; /proc/sys/vm/nr_hugepages sets the pool)",
          r.size >> 20));
    }
    if (host == MAP_FAILED) {
      return ErrnoStatus(absl::StrFormat("mmap of %d MiB guest memory", r.size >> 20));
    }
    file_offset += r.size;
    // Pushed first, so that the mapping is unmapped if madvise fails.
    mem.regions_.push_back({r.guest_addr, r.size, static_cast<uint8_t*>(host)});
    RETURN_IF_ERROR(mem.Advise({static_cast<uint8_t*>(host), r.size}));
  }
  return mem;
}

absl::Status GuestMemory::Advise(std::span<uint8_t> host) const {
  // Lets tools (and bench/) tell guest RAM from VMM overhead; older
  // kernels, and file mappings, refuse it, which costs nothing.
  prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, host.data(), host.size(), "ember-guest-mem");
  // A fork (hooks, the OCI runtime) never copies guest memory's page
  // tables; and with a flag its neighbours lack, the mapping never merges
  // with them, so tools can find it by its size.
  absl::Status st = absl::OkStatus();
  if (madvise(host.data(), host.size(), MADV_DONTFORK) != 0) {
    st = ErrnoStatus("madvise(MADV_DONTFORK) of guest memory");
  }
  // KSM also merges the private copies of a file mapping's pages (a
  // restored guest's, a mapped kernel's), once written; the clean ones
  // share the page cache.
  if (mergeable_ && madvise(host.data(), host.size(), MADV_MERGEABLE) != 0) {
    st = ErrnoStatus("madvise(MADV_MERGEABLE) of guest memory (--merge-guest-memory needs "
                     "a host kernel with KSM)");
  }
  if (huge_pages_ == HugePages::kTransparent &&
      madvise(host.data(), host.size(), MADV_HUGEPAGE) != 0) {
    st = ErrnoStatus("huge_pages \"Transparent\": madvise(MADV_HUGEPAGE) of guest memory (the "
                     "host kernel has no transparent huge pages)");
  }
  return st;
}

uint64_t GuestMemory::host_page_size() const {
  return huge_pages_ == HugePages::k2M ? kHugePageBytes : kPageSize;
}

bool GuestMemory::Discard(uint64_t addr, uint64_t len) const {
  const GuestRegion* r = Find(addr, len);
  if (r == nullptr || len == 0) return false;
  if (!dirty_.empty()) MarkDirty(*r, addr, len);
  uint64_t page = host_page_size();
  uintptr_t start = reinterpret_cast<uintptr_t>(r->host + (addr - r->guest_addr));
  uintptr_t lo = (start + page - 1) / page * page;
  uintptr_t hi = (start + len) / page * page;
  if (lo >= hi) return true;  // no whole huge page: nothing to give back
  if (huge_pages_ == HugePages::k2M && !discard_huge_pages_) return true;
  return madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) == 0;
}

void GuestMemory::AdviseReplaced(std::span<uint8_t> host) const { (void)Advise(host); }

void GuestMemory::MarkFileMapped(std::span<uint8_t> host) { file_mapped_.push_back(host); }

absl::Status GuestMemory::AddHotplugRegion(uint64_t guest_addr, uint64_t size,
                                           uint64_t slot_size) {
  uint64_t align = host_page_size();
  if (hotplug_ || size == 0 || slot_size == 0 || slot_size % align || size % slot_size ||
      guest_addr % align || guest_addr < end() || guest_addr + size < guest_addr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad hotplug memory region [%#x, +%#x) in slots of %#x", guest_addr, size, slot_size));
  }
  bool hugetlb = huge_pages_ == HugePages::k2M;
  // Unplugged from the start: PROT_NONE. hugetlbfs reserves the whole
  // region's pages now, as it does RAM's.
  void* host = hugetlb ? mmap(nullptr, size, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0)
                       : ReserveAligned(size);
  if (host == MAP_FAILED && hugetlb) {
    return ErrnoStatus(absl::StrFormat(
        "huge_pages \"2M\": %d MiB of hotplug memory from the host's hugetlbfs pool",
        size >> 20));
  }
  if (host == MAP_FAILED) {
    return ErrnoStatus(absl::StrFormat("reserving %d MiB for hotplug memory", size >> 20));
  }
  hotplug_ = GuestRegion{guest_addr, size, static_cast<uint8_t*>(host)};
  hotplug_slot_size_ = slot_size;
  hotplug_plugged_ = std::make_unique<std::atomic<bool>[]>(size / slot_size);
  return Advise({static_cast<uint8_t*>(host), size});
}

absl::Status GuestMemory::SetHotplugSlot(size_t index, bool plugged) const {
  if (!hotplug_ || index >= hotplug_->size / hotplug_slot_size_) {
    return absl::OutOfRangeError(absl::StrFormat("no hotplug memory slot %d", index));
  }
  uint8_t* at = hotplug_->host + index * hotplug_slot_size_;
  if (plugged) {
    if (mprotect(at, hotplug_slot_size_, PROT_READ | PROT_WRITE) != 0) {
      return ErrnoStatus("mprotect of a plugged hotplug memory slot");
    }
    hotplug_plugged_[index].store(true, std::memory_order_release);
    return absl::OkStatus();
  }
  hotplug_plugged_[index].store(false, std::memory_order_release);
  if (mprotect(at, hotplug_slot_size_, PROT_NONE) != 0) {
    return ErrnoStatus("mprotect of an unplugged hotplug memory slot");
  }
  return absl::OkStatus();
}

bool GuestMemory::hotplug_slot_plugged(size_t index) const {
  return hotplug_ && index < hotplug_->size / hotplug_slot_size_ &&
         hotplug_plugged_[index].load(std::memory_order_acquire);
}

uint64_t GuestMemory::end() const {
  uint64_t end = 0;
  for (const GuestRegion& r : regions_) end = std::max(end, r.guest_addr + r.size);
  if (hotplug_) end = std::max(end, hotplug_->guest_addr + hotplug_->size);
  return end;
}

uint32_t GuestMemory::memory_slots() const {
  uint64_t hotplug = hotplug_ ? hotplug_->size / hotplug_slot_size_ : 0;
  return static_cast<uint32_t>(regions_.size() + hotplug);
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : regions_(std::exchange(other.regions_, {})),
      hotplug_(std::exchange(other.hotplug_, std::nullopt)),
      hotplug_slot_size_(other.hotplug_slot_size_),
      hotplug_plugged_(std::move(other.hotplug_plugged_)),
      mergeable_(other.mergeable_),
      huge_pages_(other.huge_pages_),
      discard_huge_pages_(other.discard_huge_pages_),
      dirty_(std::move(other.dirty_)),
      file_mapped_(std::exchange(other.file_mapped_, {})) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    Unmap();
    regions_ = std::exchange(other.regions_, {});
    hotplug_ = std::exchange(other.hotplug_, std::nullopt);
    hotplug_slot_size_ = other.hotplug_slot_size_;
    hotplug_plugged_ = std::move(other.hotplug_plugged_);
    mergeable_ = other.mergeable_;
    huge_pages_ = other.huge_pages_;
    discard_huge_pages_ = other.discard_huge_pages_;
    dirty_ = std::move(other.dirty_);
    file_mapped_ = std::exchange(other.file_mapped_, {});
  }
  return *this;
}

GuestMemory::~GuestMemory() { Unmap(); }

void GuestMemory::Unmap() {
  for (const GuestRegion& r : regions_) munmap(r.host, r.size);
  regions_.clear();
  if (hotplug_) munmap(hotplug_->host, hotplug_->size);
  hotplug_.reset();
}

const GuestRegion* GuestMemory::Find(uint64_t addr, uint64_t len) const {
  for (const GuestRegion& r : regions_) {
    // Written to avoid overflow: addr - base and len are each checked
    // against the region size before they are added.
    if (addr >= r.guest_addr && addr - r.guest_addr <= r.size &&
        len <= r.size - (addr - r.guest_addr)) {
      return &r;
    }
  }
  return FindHotplug(addr, len);
}

const GuestRegion* GuestMemory::FindHotplug(uint64_t addr, uint64_t len) const {
  if (!hotplug_) return nullptr;
  const GuestRegion& r = *hotplug_;
  if (addr < r.guest_addr || addr - r.guest_addr > r.size || len > r.size - (addr - r.guest_addr)) {
    return nullptr;
  }
  // Every slot the range touches must be plugged; an empty range at the
  // very end names the last.
  uint64_t offset = addr - r.guest_addr;
  uint64_t first = std::min(offset, r.size - 1) / hotplug_slot_size_;
  uint64_t last = (len == 0 ? std::min(offset, r.size - 1) : offset + len - 1) / hotplug_slot_size_;
  for (uint64_t slot = first; slot <= last; slot++) {
    if (!hotplug_plugged_[slot].load(std::memory_order_acquire)) return nullptr;
  }
  return &r;
}

bool GuestMemory::Contains(uint64_t addr, uint64_t len) const {
  return Find(addr, len) != nullptr;
}

absl::StatusOr<std::span<uint8_t>> GuestMemory::Range(uint64_t addr, uint64_t len,
                                                      bool written) const {
  const GuestRegion* r = Find(addr, len);
  if (r == nullptr) {
    return absl::OutOfRangeError(
        absl::StrFormat("guest range [%#x, +%#x) is outside guest memory", addr, len));
  }
  if (written && !dirty_.empty()) MarkDirty(*r, addr, len);
  return std::span<uint8_t>(r->host + (addr - r->guest_addr), len);
}

absl::StatusOr<std::span<uint8_t>> GuestMemory::Slice(uint64_t addr, uint64_t len) const {
  return Range(addr, len, /*written=*/true);  // a slice may be written through
}

absl::StatusOr<std::span<uint8_t>> GuestMemory::HostRange(uint64_t addr, uint64_t len) const {
  return Range(addr, len, /*written=*/false);
}

namespace {

// The guest changes ring indexes while a device reads them, so an aligned
// 2, 4 or 8 byte field must move in one access: glibc copies 2 bytes as a
// word and then a byte, and an avail index read half old, half new breaks
// the queue.
template <typename T>
bool LoadWhole(const uint8_t* from, uint8_t* to) {
  if (reinterpret_cast<uintptr_t>(from) % sizeof(T) != 0) return false;
  T v = __atomic_load_n(reinterpret_cast<const T*>(from), __ATOMIC_RELAXED);
  std::memcpy(to, &v, sizeof(T));
  return true;
}

template <typename T>
bool StoreWhole(const uint8_t* from, uint8_t* to) {
  if (reinterpret_cast<uintptr_t>(to) % sizeof(T) != 0) return false;
  T v;
  std::memcpy(&v, from, sizeof(T));
  __atomic_store_n(reinterpret_cast<T*>(to), v, __ATOMIC_RELAXED);
  return true;
}

void CopyFromGuest(const uint8_t* from, uint8_t* to, size_t len) {
  if (len == 0) return;  // an empty span may have no pointer: memcpy's UB
  bool whole = (len == 2 && LoadWhole<uint16_t>(from, to)) ||
               (len == 4 && LoadWhole<uint32_t>(from, to)) ||
               (len == 8 && LoadWhole<uint64_t>(from, to));
  if (!whole) std::memcpy(to, from, len);
}

void CopyToGuest(const uint8_t* from, uint8_t* to, size_t len) {
  if (len == 0) return;
  bool whole = (len == 2 && StoreWhole<uint16_t>(from, to)) ||
               (len == 4 && StoreWhole<uint32_t>(from, to)) ||
               (len == 8 && StoreWhole<uint64_t>(from, to));
  if (!whole) std::memcpy(to, from, len);
}

}  // namespace

absl::Status GuestMemory::Read(uint64_t addr, std::span<uint8_t> out) const {
  const GuestRegion* r = Find(addr, out.size());
  if (r == nullptr) {
    return absl::OutOfRangeError(
        absl::StrFormat("guest range [%#x, +%#x) is outside guest memory", addr, out.size()));
  }
  CopyFromGuest(r->host + (addr - r->guest_addr), out.data(), out.size());
  return absl::OkStatus();
}

void GuestMemory::EnableDirtyTracking() {
  dirty_.clear();
  for (const GuestRegion& r : regions_) {
    size_t words = (r.size / kPageSize + 63) / 64;
    dirty_.push_back(std::make_unique<std::atomic<uint64_t>[]>(words));
  }
}

void GuestMemory::MarkDirty(const GuestRegion& r, uint64_t addr, uint64_t len) const {
  // An empty range writes no page; and one at the very end of a region
  // (addr == end, which Find accepts) would name the page past its last,
  // a bit past the bitmap when the region's pages are a multiple of 64.
  // Hotplug memory is not in snapshots (yet): nothing to record.
  if (len == 0 || &r == hotplug_region()) return;
  size_t index = &r - regions_.data();
  uint64_t first = (addr - r.guest_addr) / kPageSize;
  uint64_t last = (addr - r.guest_addr + len - 1) / kPageSize;
  for (uint64_t p = first; p <= last; p++) {
    dirty_[index][p / 64].fetch_or(uint64_t{1} << (p % 64), std::memory_order_relaxed);
  }
}

std::vector<uint64_t> GuestMemory::TakeDirtyPages(size_t index) const {
  size_t words = (regions_[index].size / kPageSize + 63) / 64;
  std::vector<uint64_t> out(words, 0);
  if (dirty_.empty()) return out;
  for (size_t i = 0; i < words; i++) out[i] = dirty_[index][i].exchange(0);
  return out;
}

absl::StatusOr<std::vector<uint64_t>> GuestMemory::ResidentPages(size_t index) const {
  const GuestRegion& r = regions_[index];
  uint64_t pages = r.size / kPageSize;
  std::vector<uint64_t> out((pages + 63) / 64, 0);
  // In pieces, so that a large region needs no large vector.
  constexpr uint64_t kPiece = 16384;
  std::vector<unsigned char> resident(kPiece);
  for (uint64_t first = 0; first < pages; first += kPiece) {
    uint64_t n = std::min(kPiece, pages - first);
    if (mincore(r.host + first * kPageSize, n * kPageSize, resident.data()) != 0) {
      return ErrnoStatus("mincore of guest memory");
    }
    for (uint64_t i = 0; i < n; i++) {
      if (resident[i] & 1) out[(first + i) / 64] |= uint64_t{1} << ((first + i) % 64);
    }
  }
  // A Diff of a booted VM is a whole memory file: its holes must read as
  // the guest does, and a file's page the cache dropped is not a zero.
  for (std::span<uint8_t> m : file_mapped_) {
    if (m.empty() || m.data() < r.host || m.data() + m.size() > r.host + r.size) continue;
    uint64_t last = (m.data() + m.size() - 1 - r.host) / kPageSize;
    for (uint64_t p = (m.data() - r.host) / kPageSize; p <= last; p++) {
      out[p / 64] |= uint64_t{1} << (p % 64);
    }
  }
  return out;
}

absl::Status GuestMemory::Write(uint64_t addr, std::span<const uint8_t> data) const {
  absl::StatusOr<std::span<uint8_t>> s = Slice(addr, data.size());
  if (!s.ok()) return s.status();
  CopyToGuest(data.data(), s->data(), data.size());
  return absl::OkStatus();
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const GuestRegion& r : regions_) total += r.size;
  return total;
}

}  // namespace ember
