#include "src/common/stop_signals.h"

#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>

#include "src/common/errno_status.h"

namespace ember {
namespace {

sigset_t StopSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockStopSignals() {
  sigset_t set = StopSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

absl::StatusOr<UniqueFd> StopSignalFd() {
  sigset_t set = StopSet();
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return ErrnoStatus("pthread_sigmask");
  UniqueFd fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus("signalfd");
  return fd;
}

}  // namespace ember
