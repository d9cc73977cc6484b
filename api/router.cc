#include "api/router.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/routes.h"
#include "api/vm_config_json.h"
#include "src/common/json_reader.h"
#include "src/common/status_macros.h"

namespace ember::api {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// The {name} segment of a pattern and what the path has there.
struct PathParam {
  std::string name;
  std::string value;
};

// Whether `path` fits `pattern`; a {name} segment takes any one non-empty
// segment.
bool Matches(absl::string_view pattern, absl::string_view path, PathParam* param) {
  std::vector<absl::string_view> want = absl::StrSplit(pattern, '/');
  std::vector<absl::string_view> got = absl::StrSplit(path, '/');
  if (want.size() != got.size()) return false;
  for (size_t i = 0; i < want.size(); i++) {
    if (absl::StartsWith(want[i], "{") && absl::EndsWith(want[i], "}")) {
      if (got[i].empty()) return false;
      param->name = std::string(want[i].substr(1, want[i].size() - 2));
      param->value = std::string(got[i]);
    } else if (want[i] != got[i]) {
      return false;
    }
  }
  return true;
}

// The route for `method` on `path`, or why there is none.
absl::StatusOr<const RouteSpec*> Find(const std::string& method, const std::string& path,
                                      PathParam* param) {
  bool path_served = false;
  for (const RouteSpec& route : RouteTable()) {
    PathParam p;
    if (!Matches(route.pattern, path, &p)) continue;
    path_served = true;
    if (route.method == method) {
      *param = std::move(p);
      return &route;
    }
  }
  if (path_served) {
    return absl::InvalidArgumentError(absl::StrCat(method, " is not allowed on ", path));
  }
  for (const char* p : kNotYetPaths) {
    if (path == p || absl::StartsWith(path, absl::StrCat(p, "/"))) {
      return absl::UnimplementedError(absl::StrCat(path, " is not supported by Ember yet"));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown path ", path));
}

// The body names the device too (drive_id, iface_id): it must be the one
// the path names. A missing or mistyped id is left to the route's parser.
absl::Status CheckPathId(const PathParam& param, const rapidjson::Value& body) {
  if (param.name.empty()) return absl::OkStatus();
  auto field = body.FindMember(param.name.c_str());
  if (field == body.MemberEnd() || !field->value.IsString()) return absl::OkStatus();
  absl::string_view id(field->value.GetString(), field->value.GetStringLength());
  if (id == param.value) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(param.name, " '", id,
                                                 "' in the body does not match '",
                                                 param.value, "' in the path"));
}

absl::StatusOr<VmmAction> Parse(const RouteSpec& route, const PathParam& param,
                                const std::string& body) {
  rapidjson::Document doc;
  doc.SetObject();
  // A GET's body, if any, is ignored.
  if (absl::string_view(route.method) != "GET") RETURN_IF_ERROR(ParseJsonObject(body, &doc));
  RETURN_IF_ERROR(CheckPathId(param, doc));
  return route.parse(doc);
}

template <typename Write>
HttpResponse Json(Write write) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  write(w);
  return {200, buf.GetString()};
}

void Str(Writer& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
}

// Firecracker's balloon statistics names, by virtio tag.
const char* StatKey(uint16_t tag) {
  static const char* const kKeys[] = {"swap_in",         "swap_out",     "major_faults",
                                      "minor_faults",    "free_memory",  "total_memory",
                                      "available_memory", "disk_caches", "hugetlb_allocations",
                                      "hugetlb_failures"};
  return tag < std::size(kKeys) ? kKeys[tag] : nullptr;
}

HttpResponse WriteInstanceInfo(const InstanceInfo& info) {
  return Json([&](Writer& w) {
    w.StartObject();
    Str(w, "id", info.id);
    Str(w, "state", info.state);
    Str(w, "vmm_version", info.vmm_version);
    Str(w, "app_name", "Ember");
    w.EndObject();
  });
}

HttpResponse WriteBalloonStats(const BalloonStats& s) {
  return Json([&](Writer& w) {
    w.StartObject();
    w.Key("target_pages");
    w.Uint(s.target_pages);
    w.Key("actual_pages");
    w.Uint(s.actual_pages);
    w.Key("target_mib");
    w.Uint(s.target_pages / 256);
    w.Key("actual_mib");
    w.Uint(s.actual_pages / 256);
    for (const auto& [tag, value] : s.stats) {
      if (const char* key = StatKey(tag)) {
        w.Key(key);
        w.Uint64(value);
      }
    }
    w.EndObject();
  });
}

HttpResponse ToResponse(const VmmResult& result) {
  return std::visit(
      [](const auto& r) -> HttpResponse {
        using T = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return {204, ""};
        } else if constexpr (std::is_same_v<T, InstanceInfo>) {
          return WriteInstanceInfo(r);
        } else if constexpr (std::is_same_v<T, VmConfig>) {
          return {200, VmConfigToJson(r)};
        } else if constexpr (std::is_same_v<T, MachineConfig>) {
          return {200, MachineConfigToJson(r)};
        } else if constexpr (std::is_same_v<T, BalloonConfig>) {
          return {200, BalloonConfigToJson(r)};
        } else {
          static_assert(std::is_same_v<T, BalloonStats>, "a VmmResult without a response");
          return WriteBalloonStats(r);
        }
      },
      result);
}

}  // namespace

std::map<std::string, std::set<std::string>> ServedRoutes() {
  std::map<std::string, std::set<std::string>> routes;
  for (const RouteSpec& route : RouteTable()) routes[route.pattern].insert(route.method);
  return routes;
}

HttpResponse Route(const HttpRequest& request, const ActionRunner& run) {
  std::string path = request.path.substr(0, request.path.find('?'));
  PathParam param;
  absl::StatusOr<const RouteSpec*> route = Find(request.method, path, &param);
  if (!route.ok()) return Fault(400, std::string(route.status().message()));
  if ((*route)->answer != nullptr) return {200, (*route)->answer()};
  absl::StatusOr<VmmAction> action = Parse(**route, param, request.body);
  if (!action.ok()) return Fault(400, std::string(action.status().message()));
  absl::StatusOr<VmmResult> result = run(std::move(*action));
  if (!result.ok()) return Fault(400, std::string(result.status().message()));
  return ToResponse(*result);
}

}  // namespace ember::api
