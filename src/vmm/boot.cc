#include "src/vmm/boot.h"

#include <sys/mman.h>
#include <time.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/mapped_file.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/boot_params.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/vmm/arch/x86_64/mptable.h"
#include "src/vmm/loader/kernel_loader.h"

namespace ember {
namespace {

// Linux's default initrd_addr_max: older kernels cannot reach higher.
constexpr uint64_t kInitrdLimit = 1ULL << 31;
constexpr uintptr_t kHugePage = 2 << 20;
constexpr uint64_t kPage = 4096;

absl::Status WriteCmdline(const GuestMemory& mem, const std::string& cmdline) {
  if (cmdline.size() + 1 > x86_64::kCmdlineMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kernel command line is %d bytes; the limit is %d", cmdline.size(),
                        x86_64::kCmdlineMaxSize - 1));
  }
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(cmdline.c_str()),
                                 cmdline.size() + 1);
  return mem.Write(x86_64::kCmdlineStart, bytes);
}

// Whether `before` and `after` (one file's stamps around reading it) show
// it unchanged, and last changed long enough ago that a later write gets a
// new mtime: file systems stamp with a clock that ticks every few ms.
bool Settled(const FileStamp& before, const FileStamp& after) {
  constexpr int64_t kTickNs = 20'000'000;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t now_ns = now.tv_sec * 1'000'000'000LL + now.tv_nsec;
  return before == after && now_ns - std::max(after.mtime_ns, after.ctime_ns) > kTickNs;
}

}  // namespace

absl::StatusOr<uint64_t> InitrdAddress(const GuestMemory& mem, uint64_t size,
                                       uint64_t kernel_end) {
  const GuestRegion& low = mem.regions().front();
  uint64_t top = std::min(low.guest_addr + low.size, kInitrdLimit);
  uint64_t addr = size <= top ? (top - size) & ~uint64_t{0xfff} : 0;
  if (size > top || addr < kernel_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initrd of %d KiB does not fit in guest memory above the kernel", size >> 10));
  }
  return addr;
}

absl::StatusOr<ImageLoad> ImageLoad::Plan(GuestMemory& mem,
                                          const BootSourceConfig& boot) {
  ImageLoad load;
  LoadedImages& images = load.images_;
  ASSIGN_OR_RETURN(MappedFile kernel, MappedFile::Open(boot.kernel_image_path));
  load.kernel_file_ = std::make_unique<MappedFile>(std::move(kernel));
  // At most one lease a file: no pointer into leases_ goes stale. Taken
  // before the file is read: from then on it stays as parsed.
  load.leases_.reserve(2);
  FileLease* lease = nullptr;
  bool can_map = load.CanMap(*load.kernel_file_, &lease);
  ASSIGN_OR_RETURN(images.kernel_stamp, load.kernel_file_->Stamp());
  ASSIGN_OR_RETURN(images.kernel,
                   ParseKernel(mem, load.kernel_file_->data(), boot.kernel_image_path));
  for (const KernelSegment& seg : images.kernel.segments) {
    ASSIGN_OR_RETURN(std::span<uint8_t> dest, mem.Slice(seg.guest_addr, seg.size));
    RETURN_IF_ERROR(load.MapWholePages(mem, load.kernel_file_.get(), can_map, lease,
                                       seg.file_offset, dest));
  }
  if (!boot.initrd_path.empty()) RETURN_IF_ERROR(load.PlanInitrd(mem, boot.initrd_path));
  // A lease that covers nothing (a bzImage's pages are not file-aligned)
  // would only hold back writers.
  std::erase_if(load.leases_, [](const FileLease& l) { return l.covered_bytes() == 0; });
  return load;
}

absl::Status ImageLoad::PlanInitrd(GuestMemory& mem, const std::string& path) {
  ASSIGN_OR_RETURN(MappedFile initrd, MappedFile::Open(path));
  initrd_file_ = std::make_unique<MappedFile>(std::move(initrd));
  FileLease* lease = nullptr;
  bool can_map = CanMap(*initrd_file_, &lease);
  ASSIGN_OR_RETURN(images_.initrd_stamp, initrd_file_->Stamp());
  images_.initrd_size = initrd_file_->data().size();
  ASSIGN_OR_RETURN(images_.initrd_addr,
                   InitrdAddress(mem, images_.initrd_size, images_.kernel.end));
  ASSIGN_OR_RETURN(std::span<uint8_t> dest, mem.Slice(images_.initrd_addr, images_.initrd_size));
  return MapWholePages(mem, initrd_file_.get(), can_map, lease, 0, dest);
}

bool ImageLoad::CanMap(const MappedFile& file, FileLease** lease) {
  if (file.OnReadOnlyFileSystem()) return true;
  absl::StatusOr<FileLease> taken = FileLease::Take(file.fd());
  if (!taken.ok()) return false;
  leases_.push_back(std::move(*taken));
  *lease = &leases_.back();
  return true;
}

void ImageLoad::AddChunks(const MappedFile* file, uint64_t offset, std::span<uint8_t> dest) {
  while (!dest.empty()) {
    uintptr_t at = reinterpret_cast<uintptr_t>(dest.data());
    size_t len = std::min<size_t>(dest.size(), kHugePage - at % kHugePage);
    chunks_.push_back({file, offset, dest.first(len)});
    offset += len;
    dest = dest.subspan(len);
  }
}

absl::Status ImageLoad::MapWholePages(GuestMemory& mem, const MappedFile* file,
                                      bool can_map, FileLease* lease, uint64_t offset,
                                      std::span<uint8_t> dest) {
  uintptr_t at = reinterpret_cast<uintptr_t>(dest.data());
  uint64_t head = (kPage - at % kPage) % kPage;
  bool fits = head + kPage <= dest.size() && (offset + head) % kPage == 0;
  // A file cannot be mapped into hugetlbfs memory: the kernel is copied.
  if (!fits || !can_map || mem.huge_pages() == HugePages::k2M) {
    AddChunks(file, offset, dest);
    return absl::OkStatus();
  }
  uint64_t len = (dest.size() - head) / kPage * kPage;
  uint8_t* start = dest.data() + head;
  constexpr int kFlags = MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE;
  if (mmap(start, len, PROT_READ | PROT_WRITE, kFlags, file->fd(), offset + head) == MAP_FAILED) {
    // A failed MAP_FIXED may have unmapped the range already.
    if (mmap(start, len, PROT_READ | PROT_WRITE, kFlags | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) {
      return ErrnoStatus("guest memory lost to a failed mapping of the kernel or initrd");
    }
    mem.AdviseReplaced({start, len});
    AddChunks(file, offset, dest);
    return absl::OkStatus();
  }
  mem.AdviseReplaced({start, len});
  mem.MarkFileMapped({start, len});
  mapped_bytes_ += len;
  if (lease != nullptr) lease->Cover({start, len});
  AddChunks(file, offset, dest.first(head));
  AddChunks(file, offset + head + len, dest.subspan(head + len));
  return absl::OkStatus();
}

void ImageLoad::Advise(const GuestMemory& mem) const {
  AdviseKernelHugePages(mem, images_.kernel);
  if (initrd_file_) {
    absl::StatusOr<std::span<uint8_t>> range = mem.HostRange(images_.initrd_addr,
                                                             images_.initrd_size);
    if (range.ok()) AdviseHugePages(*range);
  }
}

absl::Status ImageLoad::CopyShare() {
  for (size_t i = next_->fetch_add(1); i < chunks_.size(); i = next_->fetch_add(1)) {
    const Chunk& chunk = chunks_[i];
    // One populate per chunk: a huge page's fault zeroes it in one go,
    // where pread would fault it 4 KiB at a time without huge pages.
    PrefaultForCopy(chunk.dest);
    RETURN_IF_ERROR(chunk.file->ReadAt(chunk.offset, chunk.dest));
  }
  return absl::OkStatus();
}

absl::Status ImageLoad::Finish() {
  ASSIGN_OR_RETURN(FileStamp after, kernel_file_->Stamp());
  images_.stable = Settled(images_.kernel_stamp, after);
  if (initrd_file_) {
    ASSIGN_OR_RETURN(after, initrd_file_->Stamp());
    images_.stable = images_.stable && Settled(images_.initrd_stamp, after);
  }
  return absl::OkStatus();
}

absl::StatusOr<BootEntry> WriteBootInfo(const GuestMemory& mem, const LoadedImages& images,
                                        const std::string& cmdline, uint32_t vcpu_count) {
  RETURN_IF_ERROR(WriteCmdline(mem, cmdline));
  x86_64::BootInfo info;
  info.cmdline_addr = x86_64::kCmdlineStart;
  info.cmdline_size = static_cast<uint32_t>(cmdline.size());
  info.initrd_addr = images.initrd_addr;
  info.initrd_size = images.initrd_size;
  const LoadedKernel& kernel = images.kernel;
  std::vector<x86_64::E820Entry> e820 = x86_64::BuildE820(mem);
  if (kernel.protocol == x86_64::BootProtocol::kPvh) {
    RETURN_IF_ERROR(x86_64::WritePvhStartInfo(mem, e820, info));
  } else {
    ASSIGN_OR_RETURN(boot_params zero_page, x86_64::BuildZeroPage(e820, info, kernel.header));
    RETURN_IF_ERROR(mem.WriteObj(x86_64::kZeroPageStart, zero_page));
  }
  RETURN_IF_ERROR(x86_64::WriteBootTables(mem, kernel.protocol));
  RETURN_IF_ERROR(x86_64::WriteMpTable(mem, vcpu_count));
  return BootEntry{kernel.entry, kernel.protocol};
}

absl::StatusOr<BootEntry> LoadGuest(GuestMemory& mem, const BootSourceConfig& boot,
                                    const std::string& cmdline, uint32_t vcpu_count) {
  ASSIGN_OR_RETURN(ImageLoad load, ImageLoad::Plan(mem, boot));
  load.Advise(mem);
  RETURN_IF_ERROR(load.CopyShare());
  RETURN_IF_ERROR(load.Finish());
  return WriteBootInfo(mem, load.images(), cmdline, vcpu_count);
}

}  // namespace ember
