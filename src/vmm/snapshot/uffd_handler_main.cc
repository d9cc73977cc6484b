// ember-uffd-handler SOCKET MEM_FILE: an example page-fault handler for
// snapshot load with mem_backend Uffd (snapshot/uffd.h). It listens on
// SOCKET, takes one Ember's userfaultfd and region list, and fills every
// page the guest (or Ember) touches from MEM_FILE, until Ember goes away.
// A production handler could prefetch, share pages between VMs or fetch
// them from elsewhere; this one only copies on demand.
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
#include <cstring>
#include <string>
#include <vector>

#include <rapidjson/document.h>

#include "src/common/json_reader.h"

namespace {

struct Region {
  uint64_t base, size, offset;
};

int Fail(const char* what) {
  std::fprintf(stderr, "ember-uffd-handler: %s: %s\n", what, std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fputs("usage: ember-uffd-handler SOCKET MEM_FILE\n", stderr);
    return 2;
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
    regions.push_back({r["base_host_virt_addr"].GetUint64(), r["size"].GetUint64(),
                       r["offset"].GetUint64()});
    if (regions.back().offset + regions.back().size > static_cast<uint64_t>(st.st_size)) {
      errno = EINVAL;
      return Fail("a region lies beyond the memory file");
    }
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
    uint64_t page = m.arg.pagefault.address & ~uint64_t{4095};
    for (const Region& r : regions) {
      if (page < r.base || page >= r.base + r.size) continue;
      uffdio_copy copy = {};
      copy.dst = page;
      copy.src = reinterpret_cast<uint64_t>(file) + r.offset + (page - r.base);
      copy.len = 4096;
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
