#include "src/common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <cerrno>

#include <algorithm>
#include <string>
#include <vector>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "src/common/errno_status.h"
#include "src/common/open_no_wait.h"

namespace ember {
namespace {

FileStamp ToStamp(const struct stat& st) {
  return FileStamp{st.st_dev, st.st_ino, static_cast<uint64_t>(st.st_size),
                   st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec,
                   st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec};
}

}  // namespace

absl::StatusOr<FileStamp> StampOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) < 0) return ErrnoStatus(absl::StrCat("stat ", path));
  return ToStamp(st);
}

absl::StatusOr<FileStamp> MappedFile::Stamp() const {
  struct stat st;
  if (fstat(fd_.get(), &st) < 0) return ErrnoStatus("fstat");
  return ToStamp(st);
}

absl::StatusOr<MappedFile> MappedFile::Open(const std::string& path) {
  UniqueFd fd = OpenNoWait(path, O_RDONLY);
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path));
  struct stat st;
  if (fstat(fd.get(), &st) < 0) return ErrnoStatus(absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_size == 0) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  void* p = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap ", path));
  return MappedFile(std::move(fd), static_cast<const uint8_t*>(p), st.st_size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : fd_(std::move(other.fd_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

absl::Status MappedFile::ReadAt(uint64_t offset, std::span<uint8_t> out) const {
  if (offset > size_ || out.size() > size_ - offset) {
    return absl::OutOfRangeError("read past the end of the file");
  }
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd_.get(), out.data() + done, out.size() - done, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("pread");
    if (n == 0) return absl::DataLossError("file shrank while being read");
    done += n;
  }
  return absl::OkStatus();
}

bool MappedFile::OnReadOnlyFileSystem() const {
  // The common case, a writable mount, is told without reading mountinfo.
  struct statvfs vfs;
  if (fstatvfs(fd_.get(), &vfs) < 0 || !(vfs.f_flag & ST_RDONLY)) return false;
  struct stat st;
  if (fstat(fd_.get(), &st) < 0) return false;
  std::string dev = absl::StrCat(major(st.st_dev), ":", minor(st.st_dev));
  UniqueFd info(open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  if (!info.valid()) return false;  // no /proc, as in a jail
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(info.get(), buf, sizeof(buf))) > 0;) text.append(buf, n);
  // Local ones only: the server of a network or FUSE file system can
  // change a file whatever the mount says.
  static constexpr absl::string_view kLocal[] = {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs",
                                                 "squashfs", "erofs", "iso9660", "tmpfs"};
  // "id parent major:minor root mount-point options ... - type source
  // super-options": every mount of one file system shows its super options.
  bool seen = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() < 3 || f[2] != dev) continue;
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.end() - dash < 4 || std::find(std::begin(kLocal), std::end(kLocal), dash[1]) ==
                                  std::end(kLocal)) {
      return false;
    }
    std::vector<absl::string_view> super_options = absl::StrSplit(dash[3], ',');
    if (std::find(super_options.begin(), super_options.end(), "ro") == super_options.end()) {
      return false;
    }
    seen = true;
  }
  return seen;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace ember
