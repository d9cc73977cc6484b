// A read lease (fcntl F_SETLEASE) on a file whose pages are mapped into
// guest memory, private: a kernel, an initrd, a snapshot's memory file.
// Such a mapping shows the file's current contents in every page the
// guest has not yet written, so the file must not change under a running
// guest. Under a read lease it cannot: whoever opens the file for writing,
// or truncates it, waits while the kernel sends SIGIO, until the
// leaseholder has copied every mapped page into private memory and let go
// (or, if it never does, for /proc/sys/fs/lease-break-time, 45 s by
// default). One way past it: an open with O_RDONLY | O_TRUNC, which Linux
// honours for a caller allowed to write, truncates without a break.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace ember {

class FileLease {
 public:
  // Leases the file `fd` (opened read-only) names. Fails, and the caller
  // copies instead, where a lease cannot keep the file as it is: a file
  // open for writing now, one this process neither owns nor has
  // CAP_LEASE for, one on a file system that is not local (a network or
  // FUSE server, or an overlay's layers, change files past the lease), or
  // a calling thread that lets SIGIO through (its default action ends
  // the process: main.cc blocks it in every thread).
  static absl::StatusOr<FileLease> Take(int fd);
  // Where Take fails: no lease, so nothing holds back other writers (the
  // file must stay as it is, as in Firecracker), but this process's own
  // writes to the file (a snapshot over the memory file it was restored
  // from, a writable drive on it) copy first (Names, CopyAndRelease).
  static absl::StatusOr<FileLease> Unleased(int fd);

  // Adds host memory mapped from the file.
  void Cover(std::span<uint8_t> mapped) { mapped_.push_back(mapped); }
  uint64_t covered_bytes() const;

  // Whether `path` names the leased file (held and not yet released).
  bool Names(const std::string& path) const;
  // Whether someone waits to write the file. Read after SIGIO.
  bool broken() const;
  bool leased() const { return leased_; }
  // Replaces every covered range with an anonymous copy of what it holds,
  // then lets the writer go. Copy-on-write in place would not do: a
  // truncation drops even the private copies of the pages it cuts off.
  // Nothing may write the ranges meanwhile (the vCPUs paused, the devices
  // quiet). If a copy fails, a lease stays: the writer waits out the
  // break time. `moved` runs on each piece once it is anonymous: the
  // copy's mapping has none of the advice the file's had.
  absl::Status CopyAndRelease(absl::FunctionRef<void(std::span<uint8_t>)> moved);

 private:
  FileLease(UniqueFd fd, bool leased) : fd_(std::move(fd)), leased_(leased) {}
  UniqueFd fd_;  // invalid once released
  bool leased_;
  std::vector<std::span<uint8_t>> mapped_;
};

// Blocks SIGIO in the calling thread; threads it starts later inherit it.
void BlockLeaseSignal();
// A signalfd (non-blocking) that receives SIGIO, which must be blocked.
absl::StatusOr<UniqueFd> LeaseSignalFd();
// Reads every signal waiting on the signalfd `fd`: one SIGIO or many, the
// caller then looks at each lease.
void DrainSignalFd(int fd);

}  // namespace ember
