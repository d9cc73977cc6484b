#include "src/vmm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/kvm_ioctls.h"

namespace ember {
namespace {

struct RequiredCap {
  int cap;
  const char* name;
};

constexpr RequiredCap kRequiredCaps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};

// KVM's largest CPUID answer is far below this; the ioctl says E2BIG if not.
constexpr int kMaxCpuidEntries = 256;

// A header followed by `entries`, laid out as the kernel expects.
template <typename Entry>
std::vector<uint8_t> WithHeader(const Entry* entries, size_t count) {
  std::vector<uint8_t> buf(sizeof(CountHeader) + count * sizeof(Entry));
  CountHeader header = {static_cast<uint32_t>(count), 0};
  std::memcpy(buf.data(), &header, sizeof(header));
  if (count > 0) std::memcpy(buf.data() + sizeof(header), entries, count * sizeof(Entry));
  return buf;
}

absl::Status Ioctl(int fd, unsigned long request, const void* arg, const char* name) {
  if (ioctl(fd, request, arg) < 0) return ErrnoStatus(name);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Kvm> Kvm::Open(const char* path) {
  UniqueFd fd(open(path, O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path));
  int version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::UnavailableError(
        absl::StrFormat("KVM API version %d, Ember needs %d", version, KVM_API_VERSION));
  }
  for (const RequiredCap& c : kRequiredCaps) {
    if (ioctl(fd.get(), KVM_CHECK_EXTENSION, c.cap) <= 0) {
      return absl::UnavailableError(absl::StrCat("KVM lacks ", c.name));
    }
  }
  int run_size = ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(kvm_run))) return ErrnoStatus("KVM_GET_VCPU_MMAP_SIZE");
  return Kvm(std::move(fd), run_size);
}

int Kvm::CheckExtension(uint32_t cap) const {
  int n = ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return n < 0 ? 0 : n;
}

const char* Kvm::RequiredCapName(uint32_t cap) {
  for (const RequiredCap& c : kRequiredCaps) {
    if (static_cast<uint32_t>(c.cap) == cap) return c.name;
  }
  return nullptr;
}

absl::StatusOr<VmFd> Kvm::CreateVm() const {
  UniqueFd vm(ioctl(fd_.get(), KVM_CREATE_VM, 0));
  if (!vm.valid()) return ErrnoStatus("KVM_CREATE_VM");
  return VmFd(std::move(vm), run_size_);
}

absl::StatusOr<CpuidEntries> Kvm::SupportedCpuid() const {
  CpuidEntries entries(kMaxCpuidEntries);
  std::vector<uint8_t> buf = WithHeader(entries.data(), entries.size());
  if (ioctl(fd_.get(), kGetSupportedCpuid, buf.data()) < 0) {
    return ErrnoStatus("KVM_GET_SUPPORTED_CPUID");
  }
  CountHeader header;
  std::memcpy(&header, buf.data(), sizeof(header));
  entries.resize(std::min<size_t>(header.count, kMaxCpuidEntries));
  std::memcpy(entries.data(), buf.data() + sizeof(header),
              entries.size() * sizeof(kvm_cpuid_entry2));
  return entries;
}

absl::StatusOr<std::vector<uint64_t>> VmFd::GetDirtyLog(uint32_t slot, uint64_t size) const {
  std::vector<uint64_t> bitmap((size / 4096 + 63) / 64, 0);
  kvm_dirty_log log = {};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  if (ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) < 0) return ErrnoStatus("KVM_GET_DIRTY_LOG");
  return bitmap;
}

absl::Status VmFd::SetUserMemoryRegion(uint32_t slot, uint64_t guest_addr, uint64_t size,
                                       void* host, bool log_dirty, bool read_only) const {
  kvm_userspace_memory_region region = {
      .slot = slot,
      .flags = (log_dirty ? static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES) : 0u) |
               (read_only ? static_cast<uint32_t>(KVM_MEM_READONLY) : 0u),
      .guest_phys_addr = guest_addr,
      .memory_size = size,
      .userspace_addr = reinterpret_cast<uint64_t>(host),
  };
  return Ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
}

absl::Status VmFd::SetTssAddr(uint64_t addr) const {
  if (ioctl(fd_.get(), KVM_SET_TSS_ADDR, addr) < 0) return ErrnoStatus("KVM_SET_TSS_ADDR");
  return absl::OkStatus();
}

absl::Status VmFd::SetIdentityMapAddr(uint64_t addr) const {
  return Ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr, "KVM_SET_IDENTITY_MAP_ADDR");
}

absl::Status VmFd::CreateIrqchip() const {
  if (ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) return ErrnoStatus("KVM_CREATE_IRQCHIP");
  return absl::OkStatus();
}

absl::Status VmFd::CreatePit2() const {
  // The speaker port dummy keeps the guest's port 0x61 reads in the kernel.
  kvm_pit_config config = {.flags = KVM_PIT_SPEAKER_DUMMY};
  return Ioctl(fd_.get(), KVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2");
}

absl::StatusOr<VcpuFd> VmFd::CreateVcpu(uint32_t id) const {
  UniqueFd fd(ioctl(fd_.get(), KVM_CREATE_VCPU, id));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("KVM_CREATE_VCPU ", id));
  void* run = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (run == MAP_FAILED) return ErrnoStatus("mmap of kvm_run");
  return VcpuFd(std::move(fd), static_cast<kvm_run*>(run), run_size_);
}

absl::Status VmFd::RegisterIrqfd(int eventfd, uint32_t gsi) const {
  kvm_irqfd irqfd = {.fd = static_cast<uint32_t>(eventfd), .gsi = gsi};
  return Ioctl(fd_.get(), KVM_IRQFD, &irqfd, "KVM_IRQFD");
}

absl::Status VmFd::RegisterIoeventfd(int eventfd, uint64_t addr, uint32_t len,
                                     uint64_t datamatch) const {
  kvm_ioeventfd e = {};
  e.datamatch = datamatch;
  e.addr = addr;
  e.len = len;
  e.fd = eventfd;
  e.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
  return Ioctl(fd_.get(), KVM_IOEVENTFD, &e, "KVM_IOEVENTFD");
}

VcpuFd::VcpuFd(VcpuFd&& other) noexcept
    : fd_(std::move(other.fd_)),
      run_(std::exchange(other.run_, nullptr)),
      run_size_(other.run_size_) {}

VcpuFd::~VcpuFd() {
  if (run_ != nullptr) munmap(run_, run_size_);
}

int VcpuFd::Run() const { return ioctl(fd_.get(), KVM_RUN, 0) < 0 ? errno : 0; }

absl::Status VcpuFd::SetCpuid(const CpuidEntries& entries) const {
  std::vector<uint8_t> buf = WithHeader(entries.data(), entries.size());
  return Ioctl(fd_.get(), kSetCpuid2, buf.data(), "KVM_SET_CPUID2");
}

absl::StatusOr<kvm_regs> VcpuFd::GetRegs() const {
  kvm_regs regs;
  if (ioctl(fd_.get(), KVM_GET_REGS, &regs) < 0) return ErrnoStatus("KVM_GET_REGS");
  return regs;
}

absl::Status VcpuFd::SetRegs(const kvm_regs& regs) const {
  return Ioctl(fd_.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

absl::StatusOr<kvm_sregs> VcpuFd::GetSregs() const {
  kvm_sregs sregs;
  if (ioctl(fd_.get(), KVM_GET_SREGS, &sregs) < 0) return ErrnoStatus("KVM_GET_SREGS");
  return sregs;
}

absl::Status VcpuFd::SetSregs(const kvm_sregs& sregs) const {
  return Ioctl(fd_.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}

absl::Status VcpuFd::SetFpu(const kvm_fpu& fpu) const {
  return Ioctl(fd_.get(), KVM_SET_FPU, &fpu, "KVM_SET_FPU");
}

absl::StatusOr<int> VcpuFd::SetMsrs(const std::vector<kvm_msr_entry>& msrs) const {
  std::vector<uint8_t> buf = WithHeader(msrs.data(), msrs.size());
  int n = ioctl(fd_.get(), kSetMsrs, buf.data());
  if (n < 0) return ErrnoStatus("KVM_SET_MSRS");
  return n;
}

absl::StatusOr<kvm_lapic_state> VcpuFd::GetLapic() const {
  kvm_lapic_state lapic;
  if (ioctl(fd_.get(), KVM_GET_LAPIC, &lapic) < 0) return ErrnoStatus("KVM_GET_LAPIC");
  return lapic;
}

absl::Status VcpuFd::SetLapic(const kvm_lapic_state& lapic) const {
  return Ioctl(fd_.get(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

}  // namespace ember
