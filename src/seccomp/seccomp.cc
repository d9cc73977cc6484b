#include "src/seccomp/seccomp.h"

#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/signal_metrics.h"
#include "src/common/exit_code.h"

// Generated at build time by ember-seccompiler (CMakeLists.txt).
extern const uint8_t kEmberDefaultFilters[];
extern const size_t kEmberDefaultFiltersSize;
extern const char* const kEmberSyscallNames[];
extern const size_t kEmberSyscallNamesCount;

namespace ember::seccomp {
namespace {

constexpr const char* kThreadKinds[] = {"vmm", "api", "vcpu"};

// Set once by main before any other thread starts; read-only after.
std::unique_ptr<FilterMap> g_filters;
thread_local char t_kind[16] = "";

// Appends `s` to buf at *len, async-signal-safe.
void Append(char* buf, size_t cap, size_t* len, const char* s) {
  while (*s != '\0' && *len + 1 < cap) buf[(*len)++] = *s++;
}

void AppendNumber(char* buf, size_t cap, size_t* len, long n) {
  char digits[24];
  int i = 0;
  unsigned long u = n < 0 ? -static_cast<unsigned long>(n) : n;
  do {
    digits[i++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (n < 0) Append(buf, cap, len, "-");
  while (i > 0) {
    char one[2] = {digits[--i], '\0'};
    Append(buf, cap, len, one);
  }
}

void OnSigsys(int, siginfo_t* info, void*) {
  char line[256];
  size_t len = 0;
  const char* name = SyscallName(info->si_syscall);
  Append(line, sizeof(line), &len, "ember: seccomp: the ");
  Append(line, sizeof(line), &len, t_kind[0] != '\0' ? t_kind : "unfiltered");
  Append(line, sizeof(line), &len, " thread's filter denied system call ");
  AppendNumber(line, sizeof(line), &len, info->si_syscall);
  Append(line, sizeof(line), &len, " (");
  Append(line, sizeof(line), &len, name != nullptr ? name : "unknown");
  Append(line, sizeof(line), &len, "); exiting with ");
  AppendNumber(line, sizeof(line), &len, kExitBadSyscall);
  Append(line, sizeof(line), &len, "\n");
  (void)WriteLogSink(line, len);
  DieOfSignal(SIGSYS, kExitBadSyscall);  // with seccomp.num_faults in a last metrics line
}

}  // namespace

std::span<const uint8_t> DefaultFilters() {
  return {kEmberDefaultFilters, kEmberDefaultFiltersSize};
}

const char* SyscallName(long nr) {
  if (nr < 0 || static_cast<size_t>(nr) >= kEmberSyscallNamesCount) return nullptr;
  return kEmberSyscallNames[nr];
}

absl::StatusOr<FilterMap> LoadFilterFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("--seccomp-filter ", path, ": cannot be read"));
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<FilterMap> filters = ParseFilters(bytes);
  if (!filters.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--seccomp-filter ", path, ": ", filters.status().message()));
  }
  return filters;
}

absl::Status UseFilters(FilterMap filters) {
  for (const char* kind : kThreadKinds) {
    if (filters.find(kind) == filters.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the seccomp filters have none for the '", kind,
                       "' thread (they need vmm, api and vcpu)"));
    }
  }
  g_filters = std::make_unique<FilterMap>(std::move(filters));
  return absl::OkStatus();
}

absl::Status InstallThreadFilter(absl::string_view kind) {
  if (g_filters == nullptr) return absl::OkStatus();
  auto it = g_filters->find(std::string(kind));
  if (it == g_filters->end()) {
    return absl::InvalidArgumentError(absl::StrCat("no seccomp filter for thread kind ", kind));
  }
  const BpfProgram& program = it->second;
  // An empty program means "no filter" for that thread, as in Firecracker.
  if (!program.empty()) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ErrnoStatus("PR_SET_NO_NEW_PRIVS");
    sock_fprog prog = {static_cast<unsigned short>(program.size()),
                       const_cast<sock_filter*>(program.data())};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
      return ErrnoStatus(absl::StrCat("installing the ", kind, " seccomp filter"));
    }
  }
  std::snprintf(t_kind, sizeof(t_kind), "%.*s", static_cast<int>(kind.size()), kind.data());
  return absl::OkStatus();
}

void InstallDenialHandler() {
  struct sigaction sa = {};
  sa.sa_sigaction = OnSigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSYS, &sa, nullptr);
}

}  // namespace ember::seccomp
