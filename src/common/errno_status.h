// absl::Status from errno, with the failing call named for the user:
// NotFound, PermissionDenied, InvalidArgument, FailedPrecondition (busy) and
// ResourceExhausted for what a user can fix,
// Internal for the rest.
#pragma once

#include <cerrno>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace ember {

// `what` names the operation, e.g. "KVM_CREATE_VM" or "open /dev/kvm".
absl::Status ErrnoStatus(absl::string_view what, int err = errno);

}  // namespace ember
