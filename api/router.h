// Maps Firecracker's API paths and methods to VmmActions (parsed by the same
// functions as the config file) and their results back to JSON. Paths of
// the contract that Ember does not serve yet answer 400 saying so.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "api/http_server.h"
#include "src/vmm/vmm_action.h"

namespace ember::api {

// Runs an action on the VMM (Controller::Submit in production).
using ActionRunner = std::function<absl::StatusOr<VmmResult>(VmmAction)>;

HttpResponse Route(const HttpRequest& request, const ActionRunner& run);

// Every path Ember serves (with {id} placeholders) and its methods; the
// API description (api/ember-api.yaml) must list exactly these.
std::map<std::string, std::set<std::string>> ServedRoutes();

// The configuration as GET /vm/config shows it; ParseVmConfig reads it back
// (snapshots carry it).
std::string VmConfigToJson(const VmConfig& config);

}  // namespace ember::api
