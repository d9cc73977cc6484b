#include "src/vmm/host.h"

#include <cpuid.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"

namespace ember {

bool CpuHasHardwareVirtualization() {
  constexpr unsigned kVmx = 1u << 5;  // CPUID.1:ECX
  constexpr unsigned kSvm = 1u << 2;  // CPUID.80000001h:ECX
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & kVmx)) return true;
  return __get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) && (ecx & kSvm);
}

uint32_t HostPhysicalAddressBits() {
  unsigned eax = 0, ebx, ecx, edx;
  // 36 is what a CPU without the leaf has.
  return __get_cpuid(0x80000008, &eax, &ebx, &ecx, &edx) ? (eax & 0xff) : 36;
}

bool IsPvmHost(const std::string& sysfs_module) {
  struct stat st;
  if (stat(sysfs_module.c_str(), &st) == 0) return S_ISDIR(st.st_mode);
  // No sysfs to ask (a jail has none): KVM that runs on a CPU without VMX
  // or SVM can only be the software one.
  std::string modules = sysfs_module.substr(0, sysfs_module.rfind('/'));
  if (stat(modules.c_str(), &st) == 0) return false;
  return !CpuHasHardwareVirtualization();
}

std::string AddHostBootArgs(const std::string& boot_args, bool pvm_host) {
  if (!pvm_host || absl::StrContains(boot_args, kPvmGuestArgs)) return boot_args;
  if (boot_args.empty()) return kPvmGuestArgs;
  return absl::StrCat(boot_args, " ", kPvmGuestArgs);
}

absl::StatusOr<uint64_t> HostMemoryMib() {
  struct sysinfo info;
  if (sysinfo(&info) < 0) return ErrnoStatus("sysinfo");
  return (static_cast<uint64_t>(info.totalram) * info.mem_unit) >> 20;
}

}  // namespace ember
