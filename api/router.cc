#include "api/router.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/json_reader.h"
#include "api/vm_config_json.h"
#include "src/common/version.h"

namespace ember::api {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// Paths of Firecracker's contract Ember does not serve yet.
constexpr const char* kNotYet[] = {
    "/balloon/hinting/start", "/balloon/hinting/status", "/balloon/hinting/stop",
    "/cpu-config", "/pmem", "/mmds", "/mmds/config", "/entropy",
    "/hotplug/memory", "/vsock"};

HttpResponse Json(const std::function<void(Writer&)>& write) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  write(w);
  return {200, buf.GetString()};
}

void Str(Writer& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
}

void WriteMachine(Writer& w, const MachineConfig& m) {
  w.StartObject();
  w.Key("vcpu_count");
  w.Uint(m.vcpu_count);
  w.Key("mem_size_mib");
  w.Uint64(m.mem_size_mib);
  w.Key("smt");
  w.Bool(false);
  w.Key("track_dirty_pages");
  w.Bool(m.track_dirty_pages);
  w.EndObject();
}

void WriteBalloon(Writer& w, const BalloonConfig& b) {
  w.StartObject();
  w.Key("amount_mib");
  w.Uint64(b.amount_mib);
  w.Key("deflate_on_oom");
  w.Bool(b.deflate_on_oom);
  w.Key("stats_polling_interval_s");
  w.Uint(b.stats_polling_interval_s);
  w.EndObject();
}

void WriteVmConfig(Writer& w, const VmConfig& c) {
  w.StartObject();
  if (c.boot_source) {
    w.Key("boot-source");
    w.StartObject();
    Str(w, "kernel_image_path", c.boot_source->kernel_image_path);
    if (!c.boot_source->initrd_path.empty()) Str(w, "initrd_path", c.boot_source->initrd_path);
    if (c.boot_source->boot_args) Str(w, "boot_args", *c.boot_source->boot_args);
    w.EndObject();
  }
  w.Key("machine-config");
  WriteMachine(w, c.machine);
  w.Key("drives");
  w.StartArray();
  for (const DriveConfig& d : c.drives) {
    w.StartObject();
    Str(w, "drive_id", d.drive_id);
    Str(w, "path_on_host", d.path_on_host);
    w.Key("is_root_device");
    w.Bool(d.is_root_device);
    w.Key("is_read_only");
    w.Bool(d.is_read_only);
    if (!d.partuuid.empty()) Str(w, "partuuid", d.partuuid);
    Str(w, "cache_type", d.cache_type == CacheType::kWriteback ? "Writeback" : "Unsafe");
    Str(w, "io_engine", d.io_engine == IoEngine::kAsync ? "Async" : "Sync");
    w.EndObject();
  }
  w.EndArray();
  w.Key("network-interfaces");
  w.StartArray();
  for (const NetConfig& n : c.net) {
    w.StartObject();
    Str(w, "iface_id", n.iface_id);
    Str(w, "host_dev_name", n.host_dev_name);
    if (n.guest_mac) {
      const auto& m = *n.guest_mac;
      Str(w, "guest_mac", absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2],
                                          m[3], m[4], m[5]));
    }
    w.EndObject();
  }
  w.EndArray();
  if (c.balloon) {
    w.Key("balloon");
    WriteBalloon(w, *c.balloon);
  }
  w.EndObject();
}

// Firecracker's balloon statistics names, by virtio tag.
const char* StatKey(uint16_t tag) {
  static const char* const kKeys[] = {"swap_in",         "swap_out",     "major_faults",
                                      "minor_faults",    "free_memory",  "total_memory",
                                      "available_memory", "disk_caches", "hugetlb_allocations",
                                      "hugetlb_failures"};
  return tag < std::size(kKeys) ? kKeys[tag] : nullptr;
}

HttpResponse ToResponse(const VmmResult& result) {
  return std::visit(
      [](const auto& r) -> HttpResponse {
        using T = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return {204, ""};
        } else if constexpr (std::is_same_v<T, InstanceInfo>) {
          return Json([&](Writer& w) {
            w.StartObject();
            Str(w, "id", r.id);
            Str(w, "state", r.state);
            Str(w, "vmm_version", r.vmm_version);
            Str(w, "app_name", "Ember");
            w.EndObject();
          });
        } else if constexpr (std::is_same_v<T, VmConfig>) {
          return Json([&](Writer& w) { WriteVmConfig(w, r); });
        } else if constexpr (std::is_same_v<T, MachineConfig>) {
          return Json([&](Writer& w) { WriteMachine(w, r); });
        } else if constexpr (std::is_same_v<T, BalloonConfig>) {
          return Json([&](Writer& w) { WriteBalloon(w, r); });
        } else {
          return Json([&](Writer& w) {
            w.StartObject();
            w.Key("target_pages");
            w.Uint(r.target_pages);
            w.Key("actual_pages");
            w.Uint(r.actual_pages);
            w.Key("target_mib");
            w.Uint(r.target_pages / 256);
            w.Key("actual_mib");
            w.Uint(r.actual_pages / 256);
            for (const auto& [tag, value] : r.stats) {
              if (const char* key = StatKey(tag)) {
                w.Key(key);
                w.Uint64(value);
              }
            }
            w.EndObject();
          });
        }
      },
      result);
}

// Parses the body as one JSON object, then `parse` turns it into an action.
template <typename Parse>
absl::StatusOr<VmmAction> FromBody(const std::string& body, Parse parse) {
  rapidjson::Document doc;
  absl::Status st = ParseJsonObject(body, &doc);
  if (!st.ok()) return st;
  return parse(doc);
}

absl::StatusOr<VmmAction> ParseLoadSnapshot(const rapidjson::Value& v) {
  JsonReader r(v, "snapshot/load");
  LoadSnapshot a;
  a.snapshot_path = r.String("snapshot_path", true).value_or("");
  std::optional<std::string> mem_file = r.String("mem_file_path", false);
  const rapidjson::Value* backend = r.Raw("mem_backend");
  a.track_dirty_pages = r.Bool("track_dirty_pages", false).value_or(false) ||
                        r.Bool("enable_diff_snapshots", false).value_or(false);
  a.resume_vm = r.Bool("resume_vm", false).value_or(false);
  const rapidjson::Value* overrides = r.Raw("network_overrides");
  r.Bool("clock_realtime", false);
  if (absl::Status st = r.Finish(); !st.ok()) return st;
  if (a.snapshot_path.empty()) {
    return absl::InvalidArgumentError("snapshot/load.snapshot_path must not be empty");
  }
  if ((backend != nullptr) == mem_file.has_value()) {
    return absl::InvalidArgumentError(
        "snapshot/load needs exactly one of mem_backend and mem_file_path");
  }
  if (mem_file) {
    a.mem_backend_path = *mem_file;
  } else {
    if (!backend->IsObject()) {
      return absl::InvalidArgumentError("snapshot/load.mem_backend must be an object");
    }
    JsonReader b(*backend, "snapshot/load.mem_backend");
    std::string type = b.String("backend_type", true).value_or("");
    a.mem_backend_path = b.String("backend_path", true).value_or("");
    if (absl::Status st = b.Finish(); !st.ok()) return st;
    if (type != "File" && type != "Uffd") {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot/load.mem_backend.backend_type '", type, "' must be \"File\" or \"Uffd\""));
    }
    a.uffd = type == "Uffd";
  }
  if (a.mem_backend_path.empty()) {
    return absl::InvalidArgumentError("snapshot/load: the memory backend path must not be empty");
  }
  if (overrides != nullptr) {
    if (!overrides->IsArray()) {
      return absl::InvalidArgumentError("snapshot/load.network_overrides must be an array");
    }
    for (const rapidjson::Value& o : overrides->GetArray()) {
      if (!o.IsObject()) {
        return absl::InvalidArgumentError("snapshot/load.network_overrides[] must be objects");
      }
      JsonReader n(o, "snapshot/load.network_overrides[]");
      std::string iface = n.String("iface_id", true).value_or("");
      std::string tap = n.String("host_dev_name", true).value_or("");
      if (absl::Status st = n.Finish(); !st.ok()) return st;
      a.network_overrides.emplace_back(iface, tap);
    }
  }
  return a;
}

absl::StatusOr<VmmAction> Parse(const std::string& method, const std::string& path,
                                const std::string& body) {
  auto bad_method = [&] {
    return absl::InvalidArgumentError(absl::StrCat(method, " is not allowed on ", path));
  };
  if (path == "/") {
    if (method != "GET") return bad_method();
    return GetInstanceInfo{};
  }
  if (path == "/vm") {
    if (method != "PATCH") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      JsonReader r(v, "vm");
      std::string state = r.String("state", true).value_or("");
      absl::Status st = r.Finish();
      if (!st.ok()) return st;
      if (state != "Paused" && state != "Resumed") {
        return absl::InvalidArgumentError(
            absl::StrCat("vm.state '", state, "' must be \"Paused\" or \"Resumed\""));
      }
      return PatchVmState{state == "Paused"};
    });
  }
  if (path == "/snapshot/create") {
    if (method != "PUT") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      JsonReader r(v, "snapshot/create");
      CreateSnapshot a;
      a.snapshot_path = r.String("snapshot_path", true).value_or("");
      a.mem_file_path = r.String("mem_file_path", true).value_or("");
      std::string type = r.String("snapshot_type", false).value_or("Full");
      r.String("version", false);  // older clients send it; one format here
      if (absl::Status st = r.Finish(); !st.ok()) return st;
      if (type != "Full" && type != "Diff") {
        return absl::InvalidArgumentError(absl::StrCat(
            "snapshot/create.snapshot_type '", type, "' must be \"Full\" or \"Diff\""));
      }
      if (a.snapshot_path.empty() || a.mem_file_path.empty()) {
        return absl::InvalidArgumentError(
            "snapshot/create: snapshot_path and mem_file_path must not be empty");
      }
      a.diff = type == "Diff";
      return a;
    });
  }
  if (path == "/snapshot/load") {
    if (method != "PUT") return bad_method();
    return FromBody(body, ParseLoadSnapshot);
  }
  if (path == "/vm/config") {
    if (method != "GET") return bad_method();
    return GetVmConfig{};
  }
  if (path == "/machine-config") {
    if (method == "GET") return GetMachineConfig{};
    if (method == "PUT") {
      return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
        absl::StatusOr<MachineConfig> m = ParseMachineConfig(v);
        if (!m.ok()) return m.status();
        return PutMachineConfig{*m};
      });
    }
    if (method == "PATCH") {
      return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
        JsonReader r(v, "machine-config");
        PatchMachineConfig p;
        if (auto n = r.Uint("vcpu_count", false, kMinVcpus, kMaxVcpus)) p.vcpu_count = *n;
        p.mem_size_mib = r.Uint("mem_size_mib", false, 1, uint64_t{1} << 32);
        p.track_dirty_pages = r.Bool("track_dirty_pages", false);
        absl::Status st = r.Finish();
        if (!st.ok()) return st;
        return p;
      });
    }
    return bad_method();
  }
  if (path == "/boot-source") {
    if (method != "PUT") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      absl::StatusOr<BootSourceConfig> b = ParseBootSource(v);
      if (!b.ok()) return b.status();
      return PutBootSource{*b};
    });
  }
  if (absl::StartsWith(path, "/drives/")) {
    std::string id = path.substr(8);
    if (method == "PATCH") {
      return FromBody(body, [&](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
        JsonReader r(v, "drives[]");
        PatchDrive p{r.String("drive_id", true).value_or(""), r.String("path_on_host", false)};
        const rapidjson::Value* limiter = r.Raw("rate_limiter");
        absl::Status st = r.Finish();
        if (!st.ok()) return st;
        if (p.drive_id != id) {
          return absl::InvalidArgumentError(absl::StrCat(
              "drive_id '", p.drive_id, "' in the body does not match '", id, "' in the path"));
        }
        if (limiter != nullptr && !limiter->IsNull()) {
          return absl::InvalidArgumentError("drive rate limiters are not supported yet");
        }
        if (p.path_on_host && p.path_on_host->empty()) {
          return absl::InvalidArgumentError("path_on_host must not be empty");
        }
        return p;
      });
    }
    if (method != "PUT") return bad_method();
    return FromBody(body, [&](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      absl::StatusOr<DriveConfig> d = ParseDrive(v);
      if (!d.ok()) return d.status();
      if (d->drive_id != id) {
        return absl::InvalidArgumentError(absl::StrCat(
            "drive_id '", d->drive_id, "' in the body does not match '", id, "' in the path"));
      }
      return PutDrive{*d};
    });
  }
  if (absl::StartsWith(path, "/network-interfaces/")) {
    std::string id = path.substr(20);
    if (method == "PATCH") {
      return FromBody(body, [&](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
        JsonReader r(v, "network-interfaces[]");
        std::string iface = r.String("iface_id", true).value_or("");
        const rapidjson::Value* rx = r.Raw("rx_rate_limiter");
        const rapidjson::Value* tx = r.Raw("tx_rate_limiter");
        absl::Status st = r.Finish();
        if (!st.ok()) return st;
        if (iface != id) {
          return absl::InvalidArgumentError(absl::StrCat(
              "iface_id '", iface, "' in the body does not match '", id, "' in the path"));
        }
        if ((rx != nullptr && !rx->IsNull()) || (tx != nullptr && !tx->IsNull())) {
          return absl::InvalidArgumentError("network rate limiters are not supported yet");
        }
        return PatchNetworkInterface{iface};
      });
    }
    if (method != "PUT") return bad_method();
    return FromBody(body, [&](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      absl::StatusOr<NetConfig> n = ParseNetworkInterface(v);
      if (!n.ok()) return n.status();
      if (n->iface_id != id) {
        return absl::InvalidArgumentError(absl::StrCat(
            "iface_id '", n->iface_id, "' in the body does not match '", id, "' in the path"));
      }
      return PutNetworkInterface{*n};
    });
  }
  if (path == "/balloon") {
    if (method == "GET") return GetBalloon{};
    if (method == "PUT") {
      return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
        absl::StatusOr<BalloonConfig> b = ParseBalloon(v);
        if (!b.ok()) return b.status();
        return PutBalloon{*b};
      });
    }
    if (method == "PATCH") {
      return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
        JsonReader r(v, "balloon");
        std::optional<uint64_t> amount = r.Uint("amount_mib", true, 0, uint64_t{1} << 32);
        absl::Status st = r.Finish();
        if (!st.ok()) return st;
        return PatchBalloon{*amount};
      });
    }
    return bad_method();
  }
  if (path == "/balloon/statistics") {
    if (method == "GET") return GetBalloonStats{};
    if (method != "PATCH") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      JsonReader r(v, "balloon");
      std::optional<uint64_t> s = r.Uint("stats_polling_interval_s", true, 0, 3600);
      absl::Status st = r.Finish();
      if (!st.ok()) return st;
      return PatchBalloonStats{static_cast<uint32_t>(*s)};
    });
  }
  if (path == "/logger") {
    if (method != "PUT") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      absl::StatusOr<LoggerConfig> l = ParseLogger(v);
      if (!l.ok()) return l.status();
      return PutLogger{*l};
    });
  }
  if (path == "/metrics") {
    if (method != "PUT") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      absl::StatusOr<MetricsConfig> m = ParseMetrics(v);
      if (!m.ok()) return m.status();
      return PutMetrics{*m};
    });
  }
  if (path == "/serial") {
    if (method != "PUT") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      absl::StatusOr<SerialConfig> s = ParseSerial(v);
      if (!s.ok()) return s.status();
      return PutSerial{*s};
    });
  }
  if (path == "/actions") {
    if (method != "PUT") return bad_method();
    return FromBody(body, [](const rapidjson::Value& v) -> absl::StatusOr<VmmAction> {
      JsonReader r(v, "actions");
      std::string type = r.String("action_type", true).value_or("");
      absl::Status st = r.Finish();
      if (!st.ok()) return st;
      if (type == "InstanceStart") return InstanceStart{};
      if (type == "FlushMetrics") return FlushMetrics{};
      if (type == "SendCtrlAltDel") return SendCtrlAltDel{};
      return absl::InvalidArgumentError(absl::StrCat(
          "action_type '", type, "' must be InstanceStart, SendCtrlAltDel or FlushMetrics"));
    });
  }
  for (const char* p : kNotYet) {
    if (path == p || absl::StartsWith(path, absl::StrCat(p, "/"))) {
      return absl::UnimplementedError(absl::StrCat(path, " is not supported by Ember yet"));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown path ", path));
}

}  // namespace

std::string VmConfigToJson(const VmConfig& config) {
  return Json([&](Writer& w) { WriteVmConfig(w, config); }).body;
}

std::map<std::string, std::set<std::string>> ServedRoutes() {
  return {{"/", {"GET"}},
          {"/version", {"GET"}},
          {"/vm", {"PATCH"}},
          {"/vm/config", {"GET"}},
          {"/machine-config", {"GET", "PUT", "PATCH"}},
          {"/boot-source", {"PUT"}},
          {"/drives/{drive_id}", {"PUT", "PATCH"}},
          {"/network-interfaces/{iface_id}", {"PUT", "PATCH"}},
          {"/balloon", {"GET", "PUT", "PATCH"}},
          {"/balloon/statistics", {"GET", "PATCH"}},
          {"/serial", {"PUT"}},
          {"/logger", {"PUT"}},
          {"/metrics", {"PUT"}},
          {"/actions", {"PUT"}},
          {"/snapshot/create", {"PUT"}},
          {"/snapshot/load", {"PUT"}}};
}

HttpResponse Route(const HttpRequest& request, const ActionRunner& run) {
  std::string path = request.path.substr(0, request.path.find('?'));
  if (path == "/version") {
    if (request.method != "GET") {
      return Fault(400, absl::StrCat(request.method, " is not allowed on /version"));
    }
    // Answered here: the version is the API's own, the VMM need not run.
    return Json([](Writer& w) {
      w.StartObject();
      Str(w, "firecracker_version", kVersion);
      w.EndObject();
    });
  }
  absl::StatusOr<VmmAction> action = Parse(request.method, path, request.body);
  if (!action.ok()) return Fault(400, std::string(action.status().message()));
  absl::StatusOr<VmmResult> result = run(std::move(*action));
  if (!result.ok()) return Fault(400, std::string(result.status().message()));
  return ToResponse(*result);
}

}  // namespace ember::api
