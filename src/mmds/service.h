// What MMDS answers a guest's request (Firecracker's mmds/mod.rs,
// convert_to_response): GET reads the data store by path (V2: only with a
// valid X-metadata-token or X-aws-ec2-metadata-token, else 401; V1: any
// token or none, only counted), PUT /latest/api/token makes a V2 token (in
// either version) from X-metadata-token-ttl-seconds or its aws name, and is
// refused with X-Forwarded-For; other methods get 405 with Allow: GET, PUT.
#pragma once

#include <string_view>

#include "src/mmds/data_store.h"
#include "src/mmds/http.h"
#include "src/mmds/metrics.h"

namespace ember::mmds {

inline constexpr std::string_view kTokenPath = "/latest/api/token";

HttpResponse Respond(DataStore& store, const HttpRequest& request, MmdsMetrics& metrics);

// One request head off the wire to the response bytes; `skip` is set to
// the number of body bytes that follow the head and are to be dropped.
std::string HandleRequest(DataStore& store, std::string_view head, MmdsMetrics& metrics,
                          uint32_t* skip);

// Collapses runs of '/' (Firecracker's sanitize_uri).
std::string CollapseSlashes(std::string_view path);

}  // namespace ember::mmds
