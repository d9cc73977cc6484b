// Opening a path a request or a file names, where a regular file (or a
// block device) belongs: a FIFO named there would hold a plain open until
// a peer opens the other end, and the VMM thread with it.
#pragma once

#include <sys/types.h>

#include <string>

#include "src/common/unique_fd.h"

namespace ember {

// open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), then O_NONBLOCK
// cleared, so that reads and writes wait as usual (io_uring answers EAGAIN
// on a non-blocking file instead of waiting). Invalid, with errno set, if
// the open fails: a FIFO with no reader fails a write-only open (ENXIO);
// the caller checks the file type of what opens.
UniqueFd OpenNoWait(const std::string& path, int flags, mode_t mode = 0);

}  // namespace ember
