#include "src/common/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace ember {

absl::Status ErrnoStatus(absl::string_view what, int err) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  // Only errors a user can fix get a user-facing code; an EINVAL from an
  // ioctl is Ember's problem, not bad input.
  switch (err) {
    case ENOENT:
    case ENOTDIR:
    case ENXIO:  // e.g. a FIFO with no reader
      return absl::NotFoundError(message);
    case EISDIR:
      return absl::InvalidArgumentError(message);
    case EBUSY:  // e.g. a TAP another process holds
      return absl::FailedPreconditionError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ENOMEM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace ember
