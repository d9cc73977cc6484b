// The one refusal the API answers with 413 Payload Too Large instead of
// 400: MMDS's store over its size limit, as in Firecracker. Marked by a
// payload, so that no other ResourceExhausted (ENOMEM from an mmap, say)
// is reported as a full store.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace ember {

inline constexpr absl::string_view kPayloadTooLargeUrl = "ember/payload-too-large";

inline absl::Status PayloadTooLargeError(absl::string_view message) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kPayloadTooLargeUrl, absl::Cord("1"));
  return status;
}

inline bool IsPayloadTooLarge(const absl::Status& status) {
  return absl::IsResourceExhausted(status) && status.GetPayload(kPayloadTooLargeUrl).has_value();
}

}  // namespace ember
