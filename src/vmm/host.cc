#include "src/vmm/host.h"

#include <sys/stat.h>
#include <sys/sysinfo.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"

namespace ember {

bool IsPvmHost(const std::string& sysfs_module) {
  struct stat st;
  return stat(sysfs_module.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
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
