#include "src/common/testing/huge_page_pool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace ember::testing {
namespace {

constexpr char kNrPath[] = "/proc/sys/vm/nr_hugepages";

int64_t ReadNr() {
  std::ifstream in(kNrPath);
  int64_t n = -1;
  in >> n;
  return n;
}

bool WriteNr(int64_t n) {
  std::ofstream out(kNrPath);
  out << n << "\n";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace

uint64_t HugePagePool::Meminfo(const std::string& key) {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    std::istringstream fields(line);
    std::string name;
    uint64_t value = 0;
    if (fields >> name >> value && name == key + ":") return value;
  }
  return 0;
}

uint64_t HugePagePool::FreePages() {
  uint64_t free = Meminfo("HugePages_Free"), reserved = Meminfo("HugePages_Rsvd");
  return free > reserved ? free - reserved : 0;
}

uint64_t HugePagePool::Overcommit() {
  std::ifstream in("/proc/sys/vm/nr_overcommit_hugepages");
  uint64_t n = 0;
  in >> n;
  return n;
}

HugePagePool::HugePagePool(uint64_t pages) {
  lock_fd_ = open("/tmp/ember-test-hugepages.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ >= 0) flock(lock_fd_, LOCK_EX);
  uint64_t free = FreePages();
  if (free >= pages) return;
  int64_t nr = ReadNr();
  if (nr < 0 || !WriteNr(nr + static_cast<int64_t>(pages - free))) {
    unavailable_ = "the host's hugetlbfs pool has " + std::to_string(free) + " free 2 MiB pages, " +
                   std::to_string(pages) + " are needed, and " + kNrPath +
                   " cannot be raised here (not root?)";
    return;
  }
  restore_to_ = nr;
  if (FreePages() < pages) {
    unavailable_ = "the host could not grow its hugetlbfs pool to " + std::to_string(pages) +
                   " free 2 MiB pages (memory too fragmented?)";
  }
}

HugePagePool::~HugePagePool() {
  if (restore_to_ >= 0) WriteNr(restore_to_);
  if (lock_fd_ >= 0) close(lock_fd_);  // and with it the lock
}

}  // namespace ember::testing
