#include "src/common/file_lease.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/common/errno_status.h"

namespace ember {
namespace {

#ifndef F2FS_SUPER_MAGIC
#define F2FS_SUPER_MAGIC 0xF2F52010
#endif

sigset_t LeaseSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  return set;
}

// File systems whose files change only through their inodes, where the
// lease is. Overlayfs is not one: its layers can be written directly.
bool LocalFileSystem(int fd) {
  struct statfs fs;
  if (fstatfs(fd, &fs) < 0) return false;
  static constexpr uint64_t kLocal[] = {EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC,
                                        TMPFS_MAGIC, F2FS_SUPER_MAGIC};
  return std::find(std::begin(kLocal), std::end(kLocal), static_cast<uint64_t>(fs.f_type)) !=
         std::end(kLocal);
}

}  // namespace

absl::StatusOr<FileLease> FileLease::Take(int fd) {
  sigset_t blocked;
  pthread_sigmask(SIG_BLOCK, nullptr, &blocked);
  if (!sigismember(&blocked, SIGIO)) {
    return absl::FailedPreconditionError("SIGIO is not blocked: a lease break would kill");
  }
  if (!LocalFileSystem(fd)) {
    return absl::FailedPreconditionError("not on a local file system");
  }
  UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup.valid()) return ErrnoStatus("dup");
  // The lease belongs to the open file, which the dup shares; the kernel
  // signals this process (SIGIO) when it breaks.
  if (fcntl(dup.get(), F_SETLEASE, F_RDLCK) < 0) return ErrnoStatus("F_SETLEASE");
  return FileLease(std::move(dup), true);
}

absl::StatusOr<FileLease> FileLease::Unleased(int fd) {
  UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup.valid()) return ErrnoStatus("dup");
  return FileLease(std::move(dup), false);
}

uint64_t FileLease::covered_bytes() const {
  uint64_t n = 0;
  for (std::span<uint8_t> m : mapped_) n += m.size();
  return n;
}

bool FileLease::Names(const std::string& path) const {
  struct stat named, held;
  return fd_.valid() && stat(path.c_str(), &named) == 0 && fstat(fd_.get(), &held) == 0 &&
         named.st_dev == held.st_dev && named.st_ino == held.st_ino;
}

bool FileLease::broken() const {
  return leased_ && fd_.valid() && fcntl(fd_.get(), F_GETLEASE) != F_RDLCK;
}

absl::Status FileLease::CopyAndRelease(absl::FunctionRef<void(std::span<uint8_t>)> moved) {
  // In pieces, so that a large guest needs one piece more at a time, not
  // a second copy of its memory.
  constexpr size_t kPiece = 32 << 20;
  for (std::span<uint8_t> m : mapped_) {
    for (size_t at = 0; at < m.size(); at += kPiece) {
      std::span<uint8_t> piece = m.subspan(at, std::min(kPiece, m.size() - at));
      void* copy = mmap(nullptr, piece.size(), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (copy == MAP_FAILED) return ErrnoStatus("copying guest pages mapped from a file");
      std::memcpy(copy, piece.data(), piece.size());
      // Moves the copy's pages over the file's, in one step.
      if (mremap(copy, piece.size(), piece.size(), MREMAP_MAYMOVE | MREMAP_FIXED, piece.data()) ==
          MAP_FAILED) {
        absl::Status st = ErrnoStatus("replacing guest pages mapped from a file");
        munmap(copy, piece.size());
        return st;
      }
      moved(piece);
    }
  }
  if (leased_ && fcntl(fd_.get(), F_SETLEASE, F_UNLCK) < 0) return ErrnoStatus("F_SETLEASE");
  fd_.reset();
  return absl::OkStatus();
}

void BlockLeaseSignal() {
  sigset_t set = LeaseSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void DrainSignalFd(int fd) {
  signalfd_siginfo info;
  while (read(fd, &info, sizeof(info)) == sizeof(info)) {
  }
}

absl::StatusOr<UniqueFd> LeaseSignalFd() {
  sigset_t set = LeaseSet();
  UniqueFd fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus("signalfd");
  return fd;
}

}  // namespace ember
