#include "api/router.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/routes.h"
#include "api/vm_config_json.h"
#include "src/common/json_reader.h"
#include "src/common/log.h"
#include "src/common/payload_too_large.h"
#include "src/common/status_macros.h"

namespace ember::api {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// The {name} segment of a pattern and what the path has there.
struct PathParam {
  std::string name;
  std::string value;
};

bool IsParam(absl::string_view segment) {
  return absl::StartsWith(segment, "{") && absl::EndsWith(segment, "}");
}

// Whether `path` fits `pattern`; a {name} segment takes any one segment.
// A path that stops where the pattern's last {name} is ("/drives",
// "/drives/") fits with the id empty, which CheckPathId refuses as
// Firecracker does.
bool Matches(absl::string_view pattern, absl::string_view path, PathParam* param) {
  std::vector<absl::string_view> want = absl::StrSplit(pattern, '/');
  std::vector<absl::string_view> got = absl::StrSplit(path, '/');
  if (got.size() + 1 == want.size() && IsParam(want.back())) got.emplace_back();
  if (want.size() != got.size()) return false;
  for (size_t i = 0; i < want.size(); i++) {
    if (IsParam(want[i])) {
      param->name = std::string(want[i].substr(1, want[i].size() - 2));
      param->value = std::string(got[i]);
    } else if (want[i] != got[i]) {
      return false;
    }
  }
  return true;
}

// Firecracker's answer to a method and path it has no route for.
absl::Status InvalidPathMethod(const std::string& method, const std::string& path) {
  return absl::InvalidArgumentError(
      absl::StrCat("Invalid request method and/or path: ", method, " ", path, "."));
}

// The route for `method` on `path`, or why there is none.
absl::StatusOr<const RouteSpec*> Find(const std::string& method, const std::string& path,
                                      PathParam* param) {
  for (const RouteSpec& route : RouteTable()) {
    PathParam p;
    if (Matches(route.pattern, path, &p) && route.method == method) {
      *param = std::move(p);
      return &route;
    }
  }
  return InvalidPathMethod(method, path);
}

// Firecracker's rule for the ids in paths (drive_id, iface_id): not empty,
// only ASCII letters, digits and '_'.
absl::Status CheckPathId(const PathParam& param) {
  if (param.name.empty()) return absl::OkStatus();
  if (param.value.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(param.name, " in the path: The ID cannot be empty."));
  }
  for (char c : param.value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') {
      return absl::InvalidArgumentError(absl::StrCat(
          param.name, " '", param.value,
          "' in the path: API Resource IDs can only contain alphanumeric characters and "
          "underscores."));
    }
  }
  return absl::OkStatus();
}

// The body names the device too (drive_id, iface_id): it must be the one
// the path names. A missing or mistyped id is left to the route's parser.
absl::Status CheckBodyId(const PathParam& param, const rapidjson::Value& body) {
  if (param.name.empty()) return absl::OkStatus();
  auto field = body.FindMember(param.name.c_str());
  if (field == body.MemberEnd() || !field->value.IsString()) return absl::OkStatus();
  absl::string_view id(field->value.GetString(), field->value.GetStringLength());
  if (id == param.value) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("The id from the path [", param.value,
                                                 "] does not match the id from the body [",
                                                 id, "]!"));
}

// A request's action, and Firecracker's warning if it used a deprecated
// field.
struct Parsed {
  VmmAction action;
  const char* deprecation = nullptr;
};

absl::StatusOr<Parsed> Parse(const RouteSpec& route, const PathParam& param,
                             const std::string& body) {
  RETURN_IF_ERROR(CheckPathId(param));
  if (route.parse_text != nullptr) {
    ASSIGN_OR_RETURN(VmmAction action, route.parse_text(body));
    return Parsed{std::move(action)};
  }
  rapidjson::Document doc;
  doc.SetObject();
  if (absl::string_view(route.method) != "GET" && !(route.body_optional && body.empty())) {
    RETURN_IF_ERROR(ParseJsonObject(body, &doc));
    RETURN_IF_ERROR(CheckUtf8(doc));
  }
  RETURN_IF_ERROR(CheckBodyId(param, doc));
  ASSIGN_OR_RETURN(VmmAction action, route.parse(doc));
  return Parsed{std::move(action), route.deprecation ? route.deprecation(doc) : nullptr};
}

// Firecracker refuses a GET with a body and a PUT or PATCH without one,
// whatever the path.
absl::Status CheckBodyPresence(const std::string& method, const std::string& body) {
  if (method == "GET" && !body.empty()) {
    return absl::InvalidArgumentError("GET request cannot have a body.");
  }
  if (method == "PUT" && body.empty()) return absl::InvalidArgumentError(kEmptyPut);
  if (method == "PATCH" && body.empty()) return absl::InvalidArgumentError(kEmptyPatch);
  return absl::OkStatus();
}

// Rust's {:?} of a string, as Firecracker's log lines quote paths and
// bodies: in double quotes, with quotes, backslashes and control
// characters escaped (so a body cannot forge a log line).
std::string DebugQuoted(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\0': out += "\\0"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppend(&out, "\\u{", absl::Hex(static_cast<unsigned char>(c)), "}");
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// "Put request on \"/drives/rootfs\" with body \"{...}\"", as
// Firecracker's API server describes a request it received. MMDS bodies
// stay out of the log (they may hold secrets; on any /mmds path but its
// config, which Firecracker's exact match misses), and CPU templates (up
// to 50 KiB each) unless the level is Debug, as Firecracker.
std::string Describe(const std::string& method, const std::string& target,
                     const std::string& routed, const std::string& body) {
  std::string verb = absl::AsciiStrToLower(method);
  if (!verb.empty()) verb[0] = absl::ascii_toupper(verb[0]);
  std::string text = absl::StrCat(verb, " request on ", DebugQuoted(target));
  bool mmds = (routed == "/mmds" || absl::StartsWith(routed, "/mmds/")) && routed != "/mmds/config";
  if (body.empty() || mmds) return text;
  if (routed == "/cpu-config" && !LogEnabled(LogLevel::kDebug)) {
    return absl::StrCat(
        text, ". To view the CPU template received by the API, configure log-level to DEBUG");
  }
  return absl::StrCat(text, " with body ", DebugQuoted(body));
}

// A 400 with `status`'s message, logged as Firecracker logs it; a 413 for
// a store that is full (MMDS over its size limit), as Firecracker answers.
HttpResponse Refuse(const absl::Status& status) {
  if (IsPayloadTooLarge(status)) {
    std::string message = absl::StrCat("MMDS limit exceeded error: ", status.message());
    LOG_ERROR("Received Error. Status code: 413 Payload Too Large. Message: %s", message);
    return Fault(413, message);
  }
  LOG_ERROR("Received Error. Status code: 400 Bad Request. Message: %s", status.message());
  return Fault(400, std::string(status.message()));
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

// Firecracker's balloon statistics names, by virtio tag (10 and up come
// from guests on Linux 6.12 or later).
const char* StatKey(uint16_t tag) {
  static const char* const kKeys[] = {"swap_in",         "swap_out",     "major_faults",
                                      "minor_faults",    "free_memory",  "total_memory",
                                      "available_memory", "disk_caches", "hugetlb_allocations",
                                      "hugetlb_failures", "oom_kill",    "alloc_stall",
                                      "async_scan",      "direct_scan",  "async_reclaim",
                                      "direct_reclaim"};
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

HttpResponse WriteHintingStatus(const BalloonHintingStatus& s) {
  return Json([&](Writer& w) {
    w.StartObject();
    w.Key("host_cmd");
    w.Uint(s.host_cmd);
    w.Key("guest_cmd");
    if (s.guest_cmd) {
      w.Uint(*s.guest_cmd);
    } else {
      w.Null();
    }
    w.EndObject();
  });
}

HttpResponse WriteMemoryHotplugStatus(const MemoryHotplugStatus& s) {
  return Json([&](Writer& w) {
    w.StartObject();
    w.Key("total_size_mib");
    w.Uint(s.total_size_mib);
    w.Key("slot_size_mib");
    w.Uint(s.slot_size_mib);
    w.Key("block_size_mib");
    w.Uint(s.block_size_mib);
    w.Key("plugged_size_mib");
    w.Uint(s.plugged_size_mib);
    w.Key("requested_size_mib");
    w.Uint(s.requested_size_mib);
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
        } else if constexpr (std::is_same_v<T, MmdsDocument>) {
          return {200, r.json};
        } else if constexpr (std::is_same_v<T, BalloonHintingStatus>) {
          return WriteHintingStatus(r);
        } else if constexpr (std::is_same_v<T, MemoryHotplugStatus>) {
          return WriteMemoryHotplugStatus(r);
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

std::string RoutedPath(const std::string& target) {
  absl::string_view path(target);
  path = path.substr(0, path.find('?'));
  // The absolute form ("http://localhost/version"), which an HTTP/1.1
  // server must take: the host is this socket's, whatever it says.
  if (path.size() >= 7 && absl::EqualsIgnoreCase(path.substr(0, 7), "http://")) {
    path.remove_prefix(7);
    size_t slash = path.find('/');
    path = slash == absl::string_view::npos ? "" : path.substr(slash);
  }
  while (absl::ConsumePrefix(&path, "/")) {
  }
  absl::ConsumeSuffix(&path, "/");
  return absl::StrCat("/", path);
}

HttpResponse Route(const HttpRequest& request, const ActionRunner& run) {
  std::string path = RoutedPath(request.path);
  std::string target = request.path.substr(0, request.path.find('?'));
  LOG_INFO("The API server received a %s.", Describe(request.method, target, path, request.body));
  PathParam param;
  absl::StatusOr<const RouteSpec*> route = Find(request.method, path, &param);
  bool may_be_empty = route.ok() && (*route)->body_optional;
  if (absl::Status st = CheckBodyPresence(request.method, request.body);
      !st.ok() && !(may_be_empty && request.body.empty())) {
    return Refuse(st);
  }
  if (!route.ok()) return Refuse(route.status());
  HttpResponse response;
  if ((*route)->answer != nullptr) {
    response = {200, (*route)->answer()};
  } else {
    absl::StatusOr<Parsed> parsed = Parse(**route, param, request.body);
    if (!parsed.ok()) return Refuse(parsed.status());
    absl::StatusOr<VmmResult> result = run(std::move(parsed->action));
    if (!result.ok()) {
      response = Refuse(result.status());
    } else {
      response = ToResponse(*result);
    }
    // Even on a refusal, as Firecracker: the request itself used the field.
    if (parsed->deprecation != nullptr) {
      LOG_WARN("%s", parsed->deprecation);
      response.deprecated = true;
    }
  }
  if (response.status == 200) {
    LOG_INFO("The request was executed successfully. Status code: 200 OK.");
  } else if (response.status == 204) {
    LOG_INFO("The request was executed successfully. Status code: 204 No Content.");
  }
  return response;
}

}  // namespace ember::api
