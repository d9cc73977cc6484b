// A whole file mapped read-only, for images the VMM copies into the guest.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember {

// Which file a path named, and which version of it: another file (a
// rename), or the same one rewritten (its size, mtime or ctime), differs.
struct FileStamp {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t mtime_ns = 0, ctime_ns = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};

// The stamp of what `path` names now.
absl::StatusOr<FileStamp> StampOf(const std::string& path);

class MappedFile {
 public:
  // Fails with the path in the message if the file is missing, not a
  // regular file, or empty.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;
  MappedFile(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> data() const { return {data_, size_}; }
  // Copies [offset, offset + out.size()) with pread: for large ranges into
  // fresh memory this costs less than faulting in the mapping and copying.
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) const;
  // The stamp of the open file now.
  absl::StatusOr<FileStamp> Stamp() const;
  // Whether nothing can change the file: its file system is local (not
  // network or FUSE) and read-only in itself (squashfs, erofs, or mounted
  // read-only at its superblock), so no mount or path of it can write,
  // unlike a read-only bind mount. Read from /proc/self/mountinfo; false
  // when that cannot tell.
  bool OnReadOnlyFileSystem() const;
  int fd() const { return fd_.get(); }

 private:
  MappedFile(UniqueFd fd, const uint8_t* data, size_t size)
      : fd_(std::move(fd)), data_(data), size_(size) {}
  UniqueFd fd_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace ember
