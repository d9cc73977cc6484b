// RAII owners for the KVM system, VM and vCPU file descriptors. Each method
// is one ioctl with its failure turned into a Status naming the ioctl.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember {

class VmFd;
class VcpuFd;

// KVM_GET_SUPPORTED_CPUID's answer, as a plain list.
using CpuidEntries = std::vector<kvm_cpuid_entry2>;

class Kvm {
 public:
  // Opens /dev/kvm and checks the API version and every capability Ember
  // relies on, so a missing one fails here with its name.
  static absl::StatusOr<Kvm> Open(const char* path = "/dev/kvm");

  absl::StatusOr<VmFd> CreateVm() const;
  absl::StatusOr<CpuidEntries> SupportedCpuid() const;
  // KVM_CHECK_EXTENSION: 0 where the host lacks capability `cap`.
  int CheckExtension(uint32_t cap) const;
  // The name of `cap` if Open requires it, else null.
  static const char* RequiredCapName(uint32_t cap);
  int fd() const { return fd_.get(); }

 private:
  explicit Kvm(UniqueFd fd, int run_size) : fd_(std::move(fd)), run_size_(run_size) {}
  UniqueFd fd_;
  int run_size_;
};

class VmFd {
 public:
  // The bitmap of pages the guest wrote in `slot` since the last call (KVM
  // clears it), one bit per 4 KiB page; the slot must log dirty pages.
  absl::StatusOr<std::vector<uint64_t>> GetDirtyLog(uint32_t slot, uint64_t size) const;
  // `log_dirty`: KVM records the pages the guest writes (GetDirtyLog);
  // `read_only`: the guest's writes exit as MMIO instead.
  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t guest_addr, uint64_t size,
                                   void* host, bool log_dirty = false,
                                   bool read_only = false) const;
  absl::Status SetTssAddr(uint64_t addr) const;
  absl::Status SetIdentityMapAddr(uint64_t addr) const;
  absl::Status CreateIrqchip() const;
  absl::Status CreatePit2() const;
  absl::StatusOr<VcpuFd> CreateVcpu(uint32_t id) const;
  // Routes writes of an eventfd to an interrupt line (KVM_IRQFD).
  absl::Status RegisterIrqfd(int eventfd, uint32_t gsi) const;
  // Signals an eventfd, in the kernel, when the guest writes `datamatch`
  // (`len` bytes) to MMIO address `addr` (KVM_IOEVENTFD).
  absl::Status RegisterIoeventfd(int eventfd, uint64_t addr, uint32_t len,
                                 uint64_t datamatch) const;
  int fd() const { return fd_.get(); }

 private:
  friend class Kvm;
  VmFd(UniqueFd fd, int run_size) : fd_(std::move(fd)), run_size_(run_size) {}
  UniqueFd fd_;
  int run_size_;
};

class VcpuFd {
 public:
  VcpuFd(VcpuFd&& other) noexcept;
  VcpuFd& operator=(VcpuFd&&) = delete;
  VcpuFd(const VcpuFd&) = delete;
  ~VcpuFd();

  // One KVM_RUN. Returns 0 or the errno (EINTR when kicked by a signal).
  int Run() const;
  kvm_run* run() const { return run_; }

  absl::Status SetCpuid(const CpuidEntries& entries) const;
  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs) const;
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs) const;
  absl::Status SetFpu(const kvm_fpu& fpu) const;
  // Returns how many of the MSRs KVM accepted.
  absl::StatusOr<int> SetMsrs(const std::vector<kvm_msr_entry>& msrs) const;
  absl::StatusOr<kvm_lapic_state> GetLapic() const;
  absl::Status SetLapic(const kvm_lapic_state& lapic) const;
  int fd() const { return fd_.get(); }

 private:
  friend class VmFd;
  VcpuFd(UniqueFd fd, kvm_run* run, int run_size)
      : fd_(std::move(fd)), run_(run), run_size_(run_size) {}
  UniqueFd fd_;
  kvm_run* run_;
  int run_size_;
};

}  // namespace ember
