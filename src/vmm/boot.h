// Puts everything a directly booted guest needs into guest memory: kernel,
// command line, initrd, boot tables, zero page or PVH start info, MP table.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/mapped_file.h"
#include "src/vmm/arch/x86_64/regs.h"
#include "src/vmm/loader/kernel_loader.h"
#include "src/vstate/guest_memory.h"
#include "src/config/vm_config.h"

namespace ember {

struct BootEntry {
  uint64_t entry;
  x86_64::BootProtocol protocol;
};

// The kernel and initrd in guest memory, and which files they came from.
struct LoadedImages {
  LoadedKernel kernel;
  uint64_t initrd_addr = 0;
  uint64_t initrd_size = 0;
  FileStamp kernel_stamp, initrd_stamp;  // initrd_stamp: none without one
  // False if a file changed while it was read (what was loaded may mix
  // versions) or so recently that a rewrite might keep its stamp: good for
  // this start only.
  bool stable = true;
};

// Loading in steps, so that the copy can run on two threads beside KVM's
// set-up: Plan opens, parses and checks the files, maps the whole pages of
// a file on a read-only file system (MapWholePages) and cuts the other
// bytes into chunks of at most one huge page; Advise asks for huge pages; CopyShare
// allocates and fills chunks until none is left, on as many threads as
// call it; Finish, once every CopyShare has returned, checks the files
// stayed the same. The mapping must outlive the copying.
class ImageLoad {
 public:
  static absl::StatusOr<ImageLoad> Plan(const GuestMemory& mem, const BootSourceConfig& boot);
  // Bytes mapped from the files instead of copied.
  uint64_t mapped_bytes() const { return mapped_bytes_; }
  void Advise(const GuestMemory& mem) const;
  absl::Status CopyShare();
  absl::Status Finish();
  const LoadedImages& images() const { return images_; }

 private:
  struct Chunk {
    const MappedFile* file;
    uint64_t offset;
    std::span<uint8_t> dest;
  };
  ImageLoad() = default;
  // Cuts [offset, offset + dest.size()) of `file` at huge-page boundaries of dest.
  void AddChunks(const MappedFile* file, uint64_t offset, std::span<uint8_t> dest);
  // The same, but if `fixed` (the file's OnReadOnlyFileSystem), its whole
  // pages in dest are mapped from it, private: the guest reads the page
  // cache's pages and copies only those it writes. A file that can change
  // is always copied, so that a rewrite never reaches a running guest.
  // Not with mergeable memory (KSM merges anonymous pages).
  absl::Status MapWholePages(const MappedFile* file, bool fixed, uint64_t offset,
                             std::span<uint8_t> dest);

  // Heap-held, so that chunks_ and the counter stay valid when the ImageLoad moves.
  std::unique_ptr<MappedFile> kernel_file_, initrd_file_;
  std::vector<Chunk> chunks_;
  std::unique_ptr<std::atomic<size_t>> next_ = std::make_unique<std::atomic<size_t>>(0);
  uint64_t mapped_bytes_ = 0;
  LoadedImages images_;
};

// What the loaded kernel reads at its entry: the command line, the zero
// page or PVH start info, the boot tables and the MP table.
absl::StatusOr<BootEntry> WriteBootInfo(const GuestMemory& mem, const LoadedImages& images,
                                        const std::string& cmdline, uint32_t vcpu_count);

// Plan, Advise, CopyShare, Finish and WriteBootInfo on this thread.
absl::StatusOr<BootEntry> LoadGuest(const GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count);

// Page-aligned address for an initrd of `size` bytes: as high as possible
// below 2 GiB in the first region, and above `kernel_end`.
absl::StatusOr<uint64_t> InitrdAddress(const GuestMemory& mem, uint64_t size,
                                       uint64_t kernel_end);

}  // namespace ember
