// ember-snapshot-rebase --base-file BASE --diff-file DIFF: lays the pages
// of a Diff snapshot's memory file (a sparse file of full size holding only
// the pages written since the previous snapshot) over the previous layer's
// memory file, which then goes with the Diff snapshot's state file.
#define _GNU_SOURCE 1
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "ember-snapshot-rebase: %s: %s\n", what.c_str(), std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string base, diff;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--base-file") base = argv[i + 1];
    else if (k == "--diff-file") diff = argv[i + 1];
  }
  if (base.empty() || diff.empty()) {
    std::fputs("usage: ember-snapshot-rebase --base-file BASE --diff-file DIFF\n", stderr);
    return 2;
  }
  int in = open(diff.c_str(), O_RDONLY | O_CLOEXEC);
  int out = open(base.c_str(), O_WRONLY | O_CLOEXEC);
  struct stat si, so;
  if (in < 0 || fstat(in, &si) != 0) return Fail(diff);
  if (out < 0 || fstat(out, &so) != 0) return Fail(base);
  if (si.st_size != so.st_size) {
    std::fprintf(stderr, "ember-snapshot-rebase: %s is %lld bytes, %s %lld: not layers of one VM\n",
                 diff.c_str(), static_cast<long long>(si.st_size), base.c_str(),
                 static_cast<long long>(so.st_size));
    return 1;
  }
  std::vector<char> buf(1 << 20);
  long long copied = 0;
  for (off_t at = 0; at < si.st_size;) {
    off_t data = lseek(in, at, SEEK_DATA);
    if (data < 0) break;  // ENXIO: no data after `at`
    off_t hole = lseek(in, data, SEEK_HOLE);
    for (off_t pos = data; pos < hole;) {
      ssize_t n = pread(in, buf.data(), std::min<off_t>(buf.size(), hole - pos), pos);
      if (n <= 0) return Fail(diff);
      if (pwrite(out, buf.data(), n, pos) != n) return Fail(base);
      pos += n;
      copied += n;
    }
    at = hole;
  }
  if (fsync(out) != 0) return Fail(base);
  std::printf("ember-snapshot-rebase: %lld bytes of %s laid over %s\n", copied, diff.c_str(),
              base.c_str());
  return 0;
}
