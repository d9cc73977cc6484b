// Puts everything a directly booted guest needs into guest memory: kernel,
// command line, initrd, boot tables, zero page or PVH start info, MP table.
#pragma once

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

// Loading in steps, so that the copy can run on another thread beside
// KVM's set-up: Plan opens, parses and checks the files and says where each
// byte goes; Populate allocates those ranges of guest memory; Copy moves
// the bytes, touching nothing else (the mapping must outlive it).
class ImageLoad {
 public:
  static absl::StatusOr<ImageLoad> Plan(const GuestMemory& mem, const BootSourceConfig& boot);
  // Before KVM_CREATE_VM, which takes the mmap lock for writing while
  // populating holds it for reading. Best effort, as PrefaultForCopy.
  void Populate(const GuestMemory& mem) const;
  absl::Status Copy();
  const LoadedImages& images() const { return images_; }

 private:
  struct Piece {
    const MappedFile* file;
    uint64_t offset;
    std::span<uint8_t> dest;
  };
  ImageLoad() = default;

  // Heap-held, so that pieces_ stays valid when the ImageLoad moves.
  std::unique_ptr<MappedFile> kernel_file_, initrd_file_;
  std::vector<Piece> pieces_;
  LoadedImages images_;
};


// What the loaded kernel reads at its entry: the command line, the zero
// page or PVH start info, the boot tables and the MP table.
absl::StatusOr<BootEntry> WriteBootInfo(const GuestMemory& mem, const LoadedImages& images,
                                        const std::string& cmdline, uint32_t vcpu_count);

// Plan, Populate, Copy and WriteBootInfo on this thread.
absl::StatusOr<BootEntry> LoadGuest(const GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count);

// Page-aligned address for an initrd of `size` bytes: as high as possible
// below 2 GiB in the first region, and above `kernel_end`.
absl::StatusOr<uint64_t> InitrdAddress(const GuestMemory& mem, uint64_t size,
                                       uint64_t kernel_end);

}  // namespace ember
