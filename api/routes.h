// Ember's HTTP API as one table: each path pattern and method with the
// parser that turns the request into a VmmAction. The router dispatches on
// it and ServedRoutes() lists it, so what is served and what the API
// description says are checked against one source.
#pragma once

#include <string>

#include <rapidjson/document.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "src/vmm/vmm_action.h"

namespace ember::api {

struct RouteSpec {
  // "/drives/{drive_id}": a {name} matches one path segment, and the router
  // refuses a body whose field of that name says another id.
  const char* pattern;
  const char* method;
  // Turns the body into an action for the VMM. PUT and PATCH bodies are one
  // JSON object; a GET has none and its parser gets an empty object.
  absl::StatusOr<VmmAction> (*parse)(const rapidjson::Value& body) = nullptr;
  // Set instead of `parse` where the API thread answers alone: the JSON
  // body of a 200, which needs nothing from the VMM.
  std::string (*answer)() = nullptr;
  // For a body `parse` took: Firecracker's warning when it uses a field
  // Firecracker marks deprecated (the answer then carries its Deprecation
  // header), else nullptr.
  const char* (*deprecation)(const rapidjson::Value& body) = nullptr;
  // Set instead of `parse` where the body is any JSON text, not an object
  // (PUT and PATCH /mmds): gets the body as the client sent it.
  absl::StatusOr<VmmAction> (*parse_text)(const std::string& body) = nullptr;
  // A PUT or PATCH that may come without a body (`parse` gets {}).
  bool body_optional = false;
};

// Every route Ember serves.
absl::Span<const RouteSpec> RouteTable();

// Firecracker's answers to a PUT or PATCH without a body, and to a PATCH
// whose body changes nothing.
inline constexpr char kEmptyPut[] = "Empty PUT request.";
inline constexpr char kEmptyPatch[] = "Empty PATCH request.";

}  // namespace ember::api
