// One request to Ember's HTTP API on its Unix socket (Firecracker's API),
// for the template snapshot's steps: pause, snapshot, load, PATCH /drives.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ember::oci {

// Sends `method path` with a JSON `body` (may be empty) and returns the
// status code; the answer's body goes to *reply when given. Fails when the
// socket does not answer within `timeout_s`.
absl::StatusOr<int> ApiRequest(const std::string& socket, const std::string& method,
                               const std::string& path, const std::string& body,
                               std::string* reply = nullptr, double timeout_s = 60);

// Waits until the API on `socket` answers GET / (the VMM is up).
absl::Status WaitForApi(const std::string& socket, double timeout_s);

}  // namespace ember::oci
