#include "api/routes.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/str_cat.h"
#include "api/cpu_config_json.h"
#include "api/vm_config_json.h"
#include "src/common/json_reader.h"
#include "src/common/status_macros.h"
#include "src/common/version.h"

namespace ember::api {
namespace {

// A GET: the action has no fields.
template <typename Action>
absl::StatusOr<VmmAction> Get(const rapidjson::Value&) {
  return Action{};
}

// A PUT of one config section, read as the config file reads it.
template <typename Action, auto parse_config>
absl::StatusOr<VmmAction> Put(const rapidjson::Value& body) {
  ASSIGN_OR_RETURN(auto config, parse_config(body));
  return Action{std::move(config)};
}

// Answered by the API thread: the VMM need not run. Clients read this
// field as the Firecracker release they talk to (Kata refuses below
// 0.21.1), so it is the API level Ember implements; Ember's own version is
// GET /'s vmm_version.
std::string Version() {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("firecracker_version");
  w.String(kFirecrackerApiVersion);
  w.EndObject();
  return buf.GetString();
}

// Whether the body gives `name` a value (null is no value, as in serde).
bool Given(const rapidjson::Value& body, const char* name) {
  auto it = body.FindMember(name);
  return it != body.MemberEnd() && !it->value.IsNull();
}

// Firecracker's warnings for the deprecated fields it still accepts.
const char* PutMachineConfigDeprecation(const rapidjson::Value& body) {
  return Given(body, "cpu_template") ? "PUT /machine-config: cpu_template field is deprecated."
                                     : nullptr;
}

const char* PatchMachineConfigDeprecation(const rapidjson::Value& body) {
  return Given(body, "cpu_template") ? "PATCH /machine-config: cpu_template field is deprecated."
                                     : nullptr;
}

const char* PutVsockDeprecation(const rapidjson::Value& body) {
  return Given(body, "vsock_id") ? "PUT /vsock: vsock_id field is deprecated." : nullptr;
}

const char* LoadSnapshotDeprecation(const rapidjson::Value& body) {
  auto diff = body.FindMember("enable_diff_snapshots");
  bool diff_on = diff != body.MemberEnd() && diff->value.IsTrue();
  return Given(body, "mem_file_path") || diff_on
             ? "PUT /snapshot/load: mem_file_path and enable_diff_snapshots fields are "
               "deprecated."
             : nullptr;
}

// MMDS's document goes to the data store as text; it parses it by its own
// rules (any JSON value, keys sorted, depth capped).
template <typename Action>
absl::StatusOr<VmmAction> MmdsText(const std::string& body) {
  return Action{body};
}

const char* PutMmdsConfigDeprecation(const rapidjson::Value& body) {
  auto v = body.FindMember("version");
  bool v1 = v == body.MemberEnd() || v->value.IsNull() ||
            (v->value.IsString() && std::string(v->value.GetString()) == "V1");
  return v1 ? "PUT /mmds/config: V1 is deprecated. Use V2 instead." : nullptr;
}

absl::StatusOr<VmmAction> ParsePatchVm(const rapidjson::Value& body) {
  JsonReader r(body, "vm");
  std::string state = r.String("state", true).value_or("");
  RETURN_IF_ERROR(r.Finish());
  if (state != "Paused" && state != "Resumed") {
    return absl::InvalidArgumentError(
        absl::StrCat("vm.state '", state, "' must be \"Paused\" or \"Resumed\""));
  }
  return PatchVmState{state == "Paused"};
}

absl::StatusOr<VmmAction> ParsePutMachineConfig(const rapidjson::Value& body) {
  ASSIGN_OR_RETURN(MachineConfig config, ParseMachineConfig(body));
  return PutMachineConfig{config, Given(body, "cpu_template")};
}

absl::StatusOr<VmmAction> ParsePatchMachineConfig(const rapidjson::Value& body) {
  JsonReader r(body, "machine-config");
  PatchMachineConfig p;
  if (auto n = r.Uint("vcpu_count", false, kMinVcpus, kMaxVcpus)) p.vcpu_count = *n;
  p.mem_size_mib = r.Uint("mem_size_mib", false, 1, uint64_t{1} << 32);
  p.track_dirty_pages = r.Bool("track_dirty_pages", false);
  p.smt = r.Bool("smt", false);
  std::optional<std::string> tmpl = r.String("cpu_template", false);
  std::optional<std::string> huge = r.String("huge_pages", false);
  RETURN_IF_ERROR(r.Finish());
  ASSIGN_OR_RETURN(p.cpu_template, ParseCpuTemplateField(tmpl));
  ASSIGN_OR_RETURN(p.huge_pages, ParseHugePagesField(huge, "machine-config.huge_pages"));
  if (!p.vcpu_count && !p.mem_size_mib && !p.track_dirty_pages && !p.smt && !tmpl && !huge) {
    return absl::InvalidArgumentError(kEmptyPatch);  // Firecracker's answer to {}
  }
  return p;
}

absl::StatusOr<VmmAction> ParsePatchDrive(const rapidjson::Value& body) {
  JsonReader r(body, "drives[]");
  PatchDrive p{r.String("drive_id", true).value_or(""), r.String("path_on_host", false)};
  const rapidjson::Value* limiter = r.Raw("rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  if (limiter != nullptr && !limiter->IsNull()) {
    ASSIGN_OR_RETURN(p.rate_limiter,
                     ParseRateLimiterUpdate(*limiter, "drives[" + p.drive_id + "].rate_limiter"));
  }
  if (p.path_on_host && p.path_on_host->empty()) {
    return absl::InvalidArgumentError("path_on_host must not be empty");
  }
  return p;
}

absl::StatusOr<VmmAction> ParsePatchMemoryHotplug(const rapidjson::Value& body) {
  JsonReader r(body, "hotplug/memory");
  PatchMemoryHotplug p;
  p.requested_size_mib =
      static_cast<uint32_t>(r.Uint("requested_size_mib", true, 0, UINT32_MAX).value_or(0));
  RETURN_IF_ERROR(r.Finish());
  return p;
}

absl::StatusOr<VmmAction> ParsePatchPmem(const rapidjson::Value& body) {
  JsonReader r(body, "pmem[]");
  PatchPmem p{r.String("id", true).value_or("")};
  const rapidjson::Value* limiter = r.Raw("rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  if (limiter != nullptr && !limiter->IsNull()) {
    ASSIGN_OR_RETURN(p.rate_limiter,
                     ParseRateLimiterUpdate(*limiter, "pmem[" + p.id + "].rate_limiter"));
  }
  return p;
}

absl::StatusOr<VmmAction> ParsePatchNetworkInterface(const rapidjson::Value& body) {
  JsonReader r(body, "network-interfaces[]");
  PatchNetworkInterface p{r.String("iface_id", true).value_or("")};
  const rapidjson::Value* rx = r.Raw("rx_rate_limiter");
  const rapidjson::Value* tx = r.Raw("tx_rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  // As PATCH /drives: a limiter or bucket not given stays as it is.
  std::string ctx = "network-interfaces[" + p.iface_id + "]";
  if (rx != nullptr && !rx->IsNull()) {
    ASSIGN_OR_RETURN(p.rx_rate_limiter, ParseRateLimiterUpdate(*rx, ctx + ".rx_rate_limiter"));
  }
  if (tx != nullptr && !tx->IsNull()) {
    ASSIGN_OR_RETURN(p.tx_rate_limiter, ParseRateLimiterUpdate(*tx, ctx + ".tx_rate_limiter"));
  }
  return p;
}

absl::StatusOr<VmmAction> ParsePatchBalloon(const rapidjson::Value& body) {
  JsonReader r(body, "balloon");
  std::optional<uint64_t> amount = r.Uint("amount_mib", true, 0, uint64_t{1} << 32);
  RETURN_IF_ERROR(r.Finish());
  return PatchBalloon{*amount};
}

absl::StatusOr<VmmAction> ParsePatchBalloonStats(const rapidjson::Value& body) {
  JsonReader r(body, "balloon");
  std::optional<uint64_t> s = r.Uint("stats_polling_interval_s", true, 0, UINT16_MAX);
  RETURN_IF_ERROR(r.Finish());
  return PatchBalloonStats{static_cast<uint32_t>(*s)};
}

// Firecracker: a run acknowledges the guest's stop itself unless told not to.
absl::StatusOr<VmmAction> ParseStartBalloonHinting(const rapidjson::Value& body) {
  JsonReader r(body, "balloon/hinting/start");
  std::optional<bool> acknowledge = r.Bool("acknowledge_on_stop", false);
  RETURN_IF_ERROR(r.FinishIgnoringUnknown());
  return StartBalloonHinting{acknowledge.value_or(true)};
}

// Firecracker reads no body here, so any will do, JSON or not.
absl::StatusOr<VmmAction> StopBalloonHintingText(const std::string&) {
  return StopBalloonHinting{};
}

absl::StatusOr<VmmAction> ParseActions(const rapidjson::Value& body) {
  JsonReader r(body, "actions");
  std::string type = r.String("action_type", true).value_or("");
  RETURN_IF_ERROR(r.Finish());
  if (type == "InstanceStart") return InstanceStart{};
  if (type == "FlushMetrics") return FlushMetrics{};
  if (type == "SendCtrlAltDel") return SendCtrlAltDel{};
  return absl::InvalidArgumentError(absl::StrCat(
      "action_type '", type, "' must be InstanceStart, SendCtrlAltDel or FlushMetrics"));
}

absl::StatusOr<VmmAction> ParseCreateSnapshot(const rapidjson::Value& body) {
  JsonReader r(body, "snapshot/create");
  CreateSnapshot a;
  a.snapshot_path = r.String("snapshot_path", true).value_or("");
  a.mem_file_path = r.String("mem_file_path", true).value_or("");
  std::string type = r.String("snapshot_type", false).value_or("Full");
  r.String("version", false);  // older clients send it; one format here
  RETURN_IF_ERROR(r.Finish());
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
}

// snapshot/load.mem_backend: {"backend_type": "File" or "Uffd", "backend_path"}.
absl::Status ReadMemBackend(const rapidjson::Value& backend, LoadSnapshot* a) {
  if (!backend.IsObject()) {
    return absl::InvalidArgumentError("snapshot/load.mem_backend must be an object");
  }
  JsonReader b(backend, "snapshot/load.mem_backend");
  std::string type = b.String("backend_type", true).value_or("");
  a->mem_backend_path = b.String("backend_path", true).value_or("");
  RETURN_IF_ERROR(b.Finish());
  if (type != "File" && type != "Uffd") {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot/load.mem_backend.backend_type '", type, "' must be \"File\" or \"Uffd\""));
  }
  a->uffd = type == "Uffd";
  return absl::OkStatus();
}

absl::Status ReadNetworkOverrides(const rapidjson::Value& overrides, LoadSnapshot* a) {
  if (!overrides.IsArray()) {
    return absl::InvalidArgumentError("snapshot/load.network_overrides must be an array");
  }
  for (const rapidjson::Value& o : overrides.GetArray()) {
    if (!o.IsObject()) {
      return absl::InvalidArgumentError("snapshot/load.network_overrides[] must be objects");
    }
    JsonReader n(o, "snapshot/load.network_overrides[]");
    std::string iface = n.String("iface_id", true).value_or("");
    std::string tap = n.String("host_dev_name", true).value_or("");
    RETURN_IF_ERROR(n.FinishIgnoringUnknown());
    a->network_overrides.emplace_back(iface, tap);
  }
  return absl::OkStatus();
}

absl::StatusOr<VmmAction> ParseLoadSnapshot(const rapidjson::Value& body) {
  JsonReader r(body, "snapshot/load");
  LoadSnapshot a;
  a.snapshot_path = r.String("snapshot_path", true).value_or("");
  std::optional<std::string> mem_file = r.String("mem_file_path", false);
  const rapidjson::Value* backend = r.Raw("mem_backend");
  a.track_dirty_pages = r.Bool("track_dirty_pages", false).value_or(false) ||
                        r.Bool("enable_diff_snapshots", false).value_or(false);
  a.resume_vm = r.Bool("resume_vm", false).value_or(false);
  const rapidjson::Value* overrides = r.Raw("network_overrides");
  const rapidjson::Value* vsock = r.Raw("vsock_override");
  a.clock_realtime = r.Bool("clock_realtime", false).value_or(false);
  std::optional<std::string> huge = r.String("huge_pages", false);
  a.working_set_path = r.String("working_set_path", false);  // Ember's
  RETURN_IF_ERROR(r.Finish());
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
    RETURN_IF_ERROR(ReadMemBackend(*backend, &a));
  }
  if (a.mem_backend_path.empty()) {
    return absl::InvalidArgumentError("snapshot/load: the memory backend path must not be empty");
  }
  if (overrides != nullptr) RETURN_IF_ERROR(ReadNetworkOverrides(*overrides, &a));
  if (vsock != nullptr && !vsock->IsNull()) {
    if (!vsock->IsObject()) {
      return absl::InvalidArgumentError("snapshot/load.vsock_override must be an object");
    }
    JsonReader v(*vsock, "snapshot/load.vsock_override");
    a.vsock_uds_path = v.String("uds_path", true).value_or("");
    RETURN_IF_ERROR(v.FinishIgnoringUnknown());
  }
  if (a.working_set_path && a.working_set_path->empty()) {
    return absl::InvalidArgumentError("snapshot/load.working_set_path must not be empty");
  }
  if (huge && *huge != "Snapshot") {
    a.huge_pages = ParseHugePages(*huge);
    if (!a.huge_pages) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot/load.huge_pages '", *huge,
          "' must be \"Snapshot\", \"None\", \"Transparent\" or \"2M\""));
    }
  }
  return a;
}

// PUT /snapshot/working-set, Ember's extension (docs/working-set.md).
absl::StatusOr<VmmAction> ParseRecordWorkingSet(const rapidjson::Value& body) {
  JsonReader r(body, "snapshot/working-set");
  RecordWorkingSet a;
  a.snapshot_path = r.String("snapshot_path", true).value_or("");
  a.working_set_path = r.String("working_set_path", true).value_or("");
  RETURN_IF_ERROR(r.Finish());
  if (a.snapshot_path.empty() || a.working_set_path.empty()) {
    return absl::InvalidArgumentError(
        "snapshot/working-set: snapshot_path and working_set_path must not be empty");
  }
  return a;
}

constexpr RouteSpec kRoutes[] = {
    {"/", "GET", Get<GetInstanceInfo>},
    {"/version", "GET", nullptr, Version},
    {"/vm", "PATCH", ParsePatchVm},
    {"/vm/config", "GET", Get<GetVmConfig>},
    {"/machine-config", "GET", Get<GetMachineConfig>},
    {"/machine-config", "PUT", ParsePutMachineConfig, nullptr,
     PutMachineConfigDeprecation},
    {"/machine-config", "PATCH", ParsePatchMachineConfig, nullptr, PatchMachineConfigDeprecation},
    {"/boot-source", "PUT", Put<PutBootSource, ParseBootSource>},
    {"/drives/{drive_id}", "PUT", Put<PutDrive, ParseDrive>},
    {"/drives/{drive_id}", "PATCH", ParsePatchDrive},
    {"/pmem/{id}", "PUT", Put<PutPmem, ParsePmem>},
    {"/pmem/{id}", "PATCH", ParsePatchPmem},
    {"/network-interfaces/{iface_id}", "PUT", Put<PutNetworkInterface, ParseNetworkInterface>},
    {"/network-interfaces/{iface_id}", "PATCH", ParsePatchNetworkInterface},
    {"/balloon", "GET", Get<GetBalloon>},
    {"/balloon", "PUT", Put<PutBalloon, ParseBalloon>},
    {"/balloon", "PATCH", ParsePatchBalloon},
    {"/vsock", "PUT", Put<PutVsock, ParseVsock>, nullptr, PutVsockDeprecation},
    {"/entropy", "PUT", Put<PutEntropy, ParseEntropy>},
    {"/hotplug/memory", "PUT", Put<PutMemoryHotplug, ParseMemoryHotplug>},
    {"/hotplug/memory", "PATCH", ParsePatchMemoryHotplug},
    {"/hotplug/memory", "GET", Get<GetMemoryHotplug>},
    {"/cpu-config", "PUT", Put<PutCpuConfig, ParseCpuConfig>},
    {"/balloon/statistics", "GET", Get<GetBalloonStats>},
    {"/balloon/statistics", "PATCH", ParsePatchBalloonStats},
    {"/balloon/hinting/start", "PATCH", ParseStartBalloonHinting, nullptr, nullptr, nullptr,
     /*body_optional=*/true},
    {"/balloon/hinting/stop", "PATCH", nullptr, nullptr, nullptr, StopBalloonHintingText,
     /*body_optional=*/true},
    {"/balloon/hinting/status", "GET", Get<GetBalloonHintingStatus>},
    {"/serial", "PUT", Put<PutSerial, ParseSerial>},
    {"/logger", "PUT", Put<PutLogger, ParseLogger>},
    {"/metrics", "PUT", Put<PutMetrics, ParseMetrics>},
    {"/actions", "PUT", ParseActions},
    {"/snapshot/create", "PUT", ParseCreateSnapshot},
    {"/snapshot/load", "PUT", ParseLoadSnapshot, nullptr, LoadSnapshotDeprecation},
    {"/snapshot/working-set", "PUT", ParseRecordWorkingSet},  // Ember's
    {"/mmds", "GET", Get<GetMmds>},
    {"/mmds", "PUT", nullptr, nullptr, nullptr, MmdsText<PutMmds>},
    {"/mmds", "PATCH", nullptr, nullptr, nullptr, MmdsText<PatchMmds>},
    {"/mmds/config", "PUT", Put<PutMmdsConfig, ParseMmdsConfig>, nullptr,
     PutMmdsConfigDeprecation},
};

}  // namespace

absl::Span<const RouteSpec> RouteTable() { return kRoutes; }

}  // namespace ember::api
