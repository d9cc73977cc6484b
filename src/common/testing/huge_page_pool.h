// The host's pool of 2 MiB hugetlbfs pages, for tests that map guest
// memory from it.
#pragma once

#include <cstdint>
#include <string>

namespace ember::testing {

// Holds at least `pages` free pages in the pool while it lives: as root it
// grows the pool (/proc/sys/vm/nr_hugepages) by the shortfall and sets it
// back afterwards. Tests that use the pool hold one each, one at a time
// (a lock file), so that none shrinks the pool under another.
class HugePagePool {
 public:
  explicit HugePagePool(uint64_t pages);
  ~HugePagePool();
  HugePagePool(const HugePagePool&) = delete;
  HugePagePool& operator=(const HugePagePool&) = delete;

  // Why the pages could not be had; empty when they are there.
  const std::string& unavailable() const { return unavailable_; }
  // Pages nobody holds or has reserved: HugePages_Free - HugePages_Rsvd.
  static uint64_t FreePages();
  // A field of /proc/meminfo ("HugePages_Rsvd"), 0 if absent.
  static uint64_t Meminfo(const std::string& key);
  // vm.nr_overcommit_hugepages: surplus pages the pool may add on demand.
  static uint64_t Overcommit();

 private:
  int lock_fd_ = -1;
  int64_t restore_to_ = -1;  // nr_hugepages before this pool grew it
  std::string unavailable_;
};

}  // namespace ember::testing
