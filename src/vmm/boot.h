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
#include "src/common/file_lease.h"
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
// a file that cannot change unseen (MapWholePages) and cuts the other
// bytes into chunks of at most one huge page; Advise asks for huge pages; CopyShare
// allocates and fills chunks until none is left, on as many threads as
// call it; Finish, once every CopyShare has returned, checks the files
// stayed the same. The mapping must outlive the copying.
class ImageLoad {
 public:
  static absl::StatusOr<ImageLoad> Plan(GuestMemory& mem, const BootSourceConfig& boot);
  // Bytes mapped from the files instead of copied.
  uint64_t mapped_bytes() const { return mapped_bytes_; }
  // The leases that keep mapped files unchanged (file_lease.h), for the Vm
  // to hold while the guest lives.
  std::vector<FileLease> TakeLeases() { return std::move(leases_); }
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
  // Plan's part for the initrd at `path`, after the kernel's.
  absl::Status PlanInitrd(GuestMemory& mem, const std::string& path);
  // Whether `file` may be mapped into guest memory: nothing can change
  // it (OnReadOnlyFileSystem), or a lease, then the last of leases_, holds
  // back whoever would write it until the mapped pages are copied.
  bool CanMap(const MappedFile& file, FileLease** lease);
  // The same as AddChunks, but if `can_map`, the whole pages in dest are
  // mapped from the file, private, and covered by `lease` if there is one:
  // the guest reads the page cache's pages and copies only those it
  // writes, and a rewrite of the file never reaches it (GuestMemory's
  // MarkFileMapped records the range).
  absl::Status MapWholePages(GuestMemory& mem, const MappedFile* file, bool can_map,
                             FileLease* lease, uint64_t offset, std::span<uint8_t> dest);

  // Heap-held, so that chunks_ and the counter stay valid when the ImageLoad moves.
  std::unique_ptr<MappedFile> kernel_file_, initrd_file_;
  std::vector<Chunk> chunks_;
  std::unique_ptr<std::atomic<size_t>> next_ = std::make_unique<std::atomic<size_t>>(0);
  uint64_t mapped_bytes_ = 0;
  std::vector<FileLease> leases_;
  LoadedImages images_;
};

// What the loaded kernel reads at its entry: the command line, the zero
// page or PVH start info, the boot tables and the MP table.
absl::StatusOr<BootEntry> WriteBootInfo(const GuestMemory& mem, const LoadedImages& images,
                                        const std::string& cmdline, uint32_t vcpu_count);

// Plan, Advise, CopyShare, Finish and WriteBootInfo on this thread.
absl::StatusOr<BootEntry> LoadGuest(GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count);

// Page-aligned address for an initrd of `size` bytes: as high as possible
// below 2 GiB in the first region, and above `kernel_end`.
absl::StatusOr<uint64_t> InitrdAddress(const GuestMemory& mem, uint64_t size,
                                       uint64_t kernel_end);

}  // namespace ember
