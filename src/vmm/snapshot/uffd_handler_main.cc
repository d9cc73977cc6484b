// ember-uffd-handler SOCKET MEM_FILE [--working-set FILE --snapshot STATE]:
// an example page-fault handler for snapshot load with mem_backend Uffd
// (snapshot/uffd.h). It listens on SOCKET, takes one Ember's userfaultfd
// and region list, and fills every page the guest (or Ember) touches from
// MEM_FILE, until Ember goes away. With a working set (snapshot/
// working_set.h) recorded for the snapshot STATE, it first copies those
// pages in, one UFFDIO_COPY per run, before it serves any fault; a set
// from another snapshot is refused at start. A production handler could
// also share pages between VMs or fetch them from elsewhere.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <rapidjson/document.h>

#include "absl/strings/str_cat.h"

#include "src/common/json_reader.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/snapshot/working_set.h"

namespace {

struct Region {
  uint64_t base, size, offset;
  uint64_t page;  // bytes one copy fills: 4 KiB, or 2 MiB for hugetlbfs memory
};

int Fail(const char* what) {
  std::fprintf(stderr, "ember-uffd-handler: %s: %s\n", what, std::strerror(errno));
  return 1;
}

// The working set named on the command line, refused unless it was
// recorded for the snapshot whose state file is `state_path`.
absl::StatusOr<ember::snapshot::WorkingSet> LoadWorkingSet(const char* path,
                                                            const char* state_path) {
  int fd = open(state_path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size > (64 << 20)) {
    if (fd >= 0) close(fd);
    return absl::InvalidArgumentError(absl::StrCat(state_path, ": not a readable state file"));
  }
  std::vector<uint8_t> bytes(st.st_size);
  ssize_t n = pread(fd, bytes.data(), bytes.size(), 0);
  close(fd);
  if (n != st.st_size) return absl::InvalidArgumentError(absl::StrCat("reading ", state_path));
  absl::StatusOr<ember::snapshot::SnapshotState> state = ember::snapshot::DecodeSnapshot(bytes);
  if (!state.ok()) return state.status();
  return ember::snapshot::ReadWorkingSet(path, state->id);
}

// Copies `count` 4 KiB pages from file page `first` on, one ioctl for each
// part that lies in one region, widened to the region's whole host pages.
// Pages already there are left as they are.
bool CopyRun(int uffd, const std::vector<Region>& regions, const uint8_t* file, uint64_t first,
             uint64_t count) {
  for (const Region& r : regions) {
    uint64_t lo = std::max(first * 4096, r.offset);
    uint64_t hi = std::min((first + count) * 4096, r.offset + r.size);
    if (lo >= hi) continue;
    lo = r.offset + (lo - r.offset) / r.page * r.page;
    hi = r.offset + (hi - r.offset + r.page - 1) / r.page * r.page;
    while (lo < hi) {
      uffdio_copy copy = {};
      copy.dst = r.base + (lo - r.offset);
      copy.src = reinterpret_cast<uint64_t>(file) + lo;
      copy.len = hi - lo;
      if (ioctl(uffd, UFFDIO_COPY, &copy) == 0) break;
      if (errno != EEXIST && errno != EAGAIN) return false;
      // Part copied, then a page that is there already: skip that page.
      lo += (copy.copy > 0 ? static_cast<uint64_t>(copy.copy) : 0) + (errno == EEXIST ? r.page : 0);
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool with_set = argc == 7 && std::strcmp(argv[3], "--working-set") == 0 &&
                  std::strcmp(argv[5], "--snapshot") == 0;
  if (argc != 3 && !with_set) {
    std::fputs("usage: ember-uffd-handler SOCKET MEM_FILE [--working-set FILE --snapshot STATE]\n",
               stderr);
    return 2;
  }
  ember::snapshot::WorkingSet working_set;
  if (with_set) {
    absl::StatusOr<ember::snapshot::WorkingSet> set = LoadWorkingSet(argv[4], argv[6]);
    if (!set.ok()) {
      std::fprintf(stderr, "ember-uffd-handler: %s\n", std::string(set.status().message()).c_str());
      return 1;
    }
    working_set = *std::move(set);
  }
  int mem = open(argv[2], O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (mem < 0 || fstat(mem, &st) != 0) return Fail(argv[2]);
  void* file = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, mem, 0);
  if (file == MAP_FAILED) return Fail("mmap of the memory file");

  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", argv[1]);
  unlink(argv[1]);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0) {
    return Fail(argv[1]);
  }
  std::printf("ember-uffd-handler: listening on %s\n", argv[1]);
  std::fflush(stdout);
  int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (conn < 0) return Fail("accept");

  // One message: the region list, with the userfaultfd attached.
  std::vector<char> json(64 * 1024);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov = {json.data(), json.size() - 1};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  if (n <= 0 || cmsg == nullptr || cmsg->cmsg_type != SCM_RIGHTS) return Fail("no userfaultfd received");
  int uffd;
  std::memcpy(&uffd, CMSG_DATA(cmsg), sizeof(uffd));
  json[n] = '\0';
  rapidjson::Document doc;
  if (!ember::ParseJson(absl::string_view(json.data(), n), &doc).ok()) {
    return Fail("bad region list");
  }
  std::vector<Region> regions;
  std::printf("ember-uffd-handler: got the userfaultfd and %s\n", json.data());
  std::fflush(stdout);
  if (doc.HasParseError() || !doc.IsArray()) return Fail("bad region list");
  for (const auto& r : doc.GetArray()) {
    uint64_t page = r.HasMember("page_size") ? r["page_size"].GetUint64() : 4096;
    regions.push_back({r["base_host_virt_addr"].GetUint64(), r["size"].GetUint64(),
                       r["offset"].GetUint64(), page});
    const Region& added = regions.back();
    if (added.offset + added.size > static_cast<uint64_t>(st.st_size)) {
      errno = EINVAL;
      return Fail("a region lies beyond the memory file");
    }
    if (page < 4096 || (page & (page - 1)) != 0 || added.size % page || added.offset % page ||
        added.base % page) {
      errno = EINVAL;
      return Fail("a region is not made of whole pages of its page_size");
    }
  }

  if (!working_set.runs.empty()) {
    // Its pages are RAM's, at the file's start; memory hotplug's region,
    // if any, follows them.
    if (working_set.snapshot.memory_bytes > static_cast<uint64_t>(st.st_size)) {
      errno = EINVAL;
      return Fail("the working set is for another memory size");
    }
    for (const ember::snapshot::PageRun& run : working_set.runs) {
      if (!CopyRun(uffd, regions, static_cast<const uint8_t*>(file), run.first, run.count)) {
        return Fail("UFFDIO_COPY (working set)");
      }
    }
    std::printf("ember-uffd-handler: working set of %llu pages copied\n",
                static_cast<unsigned long long>(working_set.pages()));
    std::fflush(stdout);
  }

  uint64_t served = 0;
  for (;;) {
    pollfd fds[2] = {{uffd, POLLIN, 0}, {conn, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Fail("poll");
    }
    // Ember closed its end: it has exited.
    if (fds[1].revents & (POLLIN | POLLHUP)) {
      char b;
      if (recv(conn, &b, 1, MSG_DONTWAIT) <= 0) break;
    }
    if (!(fds[0].revents & POLLIN)) continue;
    uffd_msg m;
    if (read(uffd, &m, sizeof(m)) != sizeof(m)) continue;
    if (m.event != UFFD_EVENT_PAGEFAULT) continue;
    uint64_t address = m.arg.pagefault.address;
    for (const Region& r : regions) {
      if (address < r.base || address >= r.base + r.size) continue;
      uint64_t page = r.base + (address - r.base) / r.page * r.page;
      uffdio_copy copy = {};
      copy.dst = page;
      copy.src = reinterpret_cast<uint64_t>(file) + r.offset + (page - r.base);
      copy.len = r.page;
      if (ioctl(uffd, UFFDIO_COPY, &copy) != 0 && errno != EEXIST) return Fail("UFFDIO_COPY");
      if (++served == 1) {
        std::printf("ember-uffd-handler: first page served\n");
        std::fflush(stdout);
      }
    }
  }
  std::printf("ember-uffd-handler: served %llu pages; Ember is gone\n",
              static_cast<unsigned long long>(served));
  return 0;
}
