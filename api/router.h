// api/ is the top layer: Firecracker's HTTP API, its JSON and the config
// file. It turns requests into typed actions (src/vmm/vmm_action.h); no
// JSON goes below it. It may use every layer.
//
// Serves Firecracker's API paths from the route table (api/routes.h): finds
// the route, reads the body, asks the VMM and writes its answer as JSON.
// Paths of the contract that Ember does not serve yet answer 400 saying so.
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

// Every error is a 400 with a fault_message; a query string is ignored.
HttpResponse Route(const HttpRequest& request, const ActionRunner& run);

// The path a request target is routed on: as Firecracker takes it, no
// scheme and host (absolute form), one leading '/' however many came, and
// one trailing '/' dropped ("//machine-config/" and
// "http://localhost/machine-config" are "/machine-config"); and no query
// string, which Firecracker refuses. Segments past the route's are not
// dropped (Firecracker ignores them): such a path is refused.
std::string RoutedPath(const std::string& target);

// Every path Ember serves (with {id} placeholders) and its methods, read
// from the route table; the API description (api/ember-api.yaml) must list
// exactly these.
std::map<std::string, std::set<std::string>> ServedRoutes();

}  // namespace ember::api
