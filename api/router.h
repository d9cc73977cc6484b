// Maps Firecracker's API paths and methods to VmmActions (parsed by the same
// functions as the config file) and their results back to JSON. Paths of
// the contract that Ember does not serve yet answer 400 saying so.
#pragma once

#include <functional>

#include "absl/status/statusor.h"
#include "api/http_server.h"
#include "src/vmm/vmm_action.h"

namespace ember::api {

// Runs an action on the VMM (Controller::Submit in production).
using ActionRunner = std::function<absl::StatusOr<VmmResult>(VmmAction)>;

HttpResponse Route(const HttpRequest& request, const ActionRunner& run);

// The paths Ember serves, for its API description test.
std::vector<std::string> ServedPaths();

}  // namespace ember::api
