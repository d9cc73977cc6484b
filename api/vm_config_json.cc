#include "api/vm_config_json.h"

#include <arpa/inet.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "api/cpu_config_json.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/json_reader.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"
#include "src/vmm/preboot_controller.h"

namespace ember::api {
namespace {

}  // namespace

absl::StatusOr<BootSourceConfig> ParseBootSource(const rapidjson::Value& value) {
  JsonReader r(value, "boot-source");
  BootSourceConfig boot;
  boot.kernel_image_path = r.String("kernel_image_path", true).value_or("");
  boot.initrd_path = r.String("initrd_path", false).value_or("");
  boot.boot_args = r.String("boot_args", false);
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(ValidateBootSource(boot));
  // An empty path is read (GET /vm/config shows one before any PUT); as in
  // Firecracker, opening it refuses it (CheckBootSourceFiles).
  return boot;
}

absl::StatusOr<MachineConfig> ParseMachineConfig(const rapidjson::Value& value) {
  JsonReader r(value, "machine-config");
  MachineConfig m;
  m.vcpu_count = static_cast<uint32_t>(
      r.Uint("vcpu_count", true, kMinVcpus, kMaxVcpus).value_or(kMinVcpus));
  // The upper bound only keeps the MiB-to-bytes shift from overflowing;
  // the host's RAM is checked when the VM is built.
  m.mem_size_mib = r.Uint("mem_size_mib", true, 1, uint64_t{1} << 32).value_or(1);
  m.track_dirty_pages = r.Bool("track_dirty_pages", false).value_or(false);
  std::optional<bool> smt = r.Bool("smt", false);
  std::optional<std::string> tmpl = r.String("cpu_template", false);
  std::optional<std::string> huge = r.String("huge_pages", false);
  RETURN_IF_ERROR(r.Finish());
  ASSIGN_OR_RETURN(std::optional<StaticCpuTemplate> cpu_template, ParseCpuTemplateField(tmpl));
  m.cpu_template = cpu_template.value_or(StaticCpuTemplate::kNone);
  m.smt = smt.value_or(false);
  ASSIGN_OR_RETURN(std::optional<HugePages> pages,
                   ParseHugePagesField(huge, "machine-config.huge_pages"));
  m.huge_pages = pages.value_or(HugePages::kNone);
  return m;
}

absl::StatusOr<std::optional<HugePages>> ParseHugePagesField(
    const std::optional<std::string>& value, absl::string_view field) {
  if (!value) return std::nullopt;
  std::optional<HugePages> pages = ParseHugePages(*value);
  if (!pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " '", *value, "' must be \"None\", \"Transparent\" or \"2M\""));
  }
  return pages;
}

absl::StatusOr<std::optional<StaticCpuTemplate>> ParseCpuTemplateField(
    const std::optional<std::string>& value) {
  if (!value) return std::nullopt;
  std::optional<StaticCpuTemplate> t = ParseStaticCpuTemplate(*value);
  if (!t) {
    return absl::InvalidArgumentError(absl::StrCat(
        "machine-config.cpu_template '", *value,
        "' must be \"C3\", \"T2\", \"T2S\", \"T2CL\", \"T2A\" or \"None\"; a custom "
        "template goes to PUT /cpu-config"));
  }
  return t;
}

absl::StatusOr<std::optional<TokenBucketConfig>> ParseTokenBucket(const rapidjson::Value& value,
                                                                   const std::string& context);

// Firecracker's serial limiter is one bucket of bytes, not a RateLimiter.
absl::StatusOr<SerialConfig> ParseSerial(const rapidjson::Value& value) {
  JsonReader r(value, "serial");
  SerialConfig serial;
  serial.serial_out_path = r.String("serial_out_path", false).value_or("");
  const rapidjson::Value* limiter = r.Raw("rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  if (limiter != nullptr && !limiter->IsNull()) {
    ASSIGN_OR_RETURN(serial.rate_limiter, ParseTokenBucket(*limiter, "serial.rate_limiter"));
  }
  return serial;
}

absl::StatusOr<std::optional<TokenBucketConfig>> ParseTokenBucket(const rapidjson::Value& value,
                                                                   const std::string& context) {
  JsonReader r(value, context);
  TokenBucketConfig b;
  b.size = r.Uint("size", true, 0, UINT64_MAX).value_or(0);
  b.refill_time_ms = r.Uint("refill_time", true, 0, UINT64_MAX).value_or(0);
  b.one_time_burst = r.Uint("one_time_burst", false, 0, UINT64_MAX).value_or(0);
  RETURN_IF_ERROR(r.FinishIgnoringUnknown());
  // As Firecracker's TokenBucket::new: a bucket of size 0, of refill_time
  // 0, or whose refill_time in ns overflows 64 bits limits nothing.
  if (b.size == 0 || b.refill_time_ms == 0 || b.refill_time_ms > kMaxRefillTimeMs) {
    return std::nullopt;
  }
  return b;
}

absl::StatusOr<RateLimiterUpdate> ParseRateLimiterUpdate(const rapidjson::Value& value,
                                                         const std::string& context) {
  JsonReader r(value, context);
  const rapidjson::Value* bandwidth = r.Raw("bandwidth");
  const rapidjson::Value* ops = r.Raw("ops");
  RETURN_IF_ERROR(r.Finish());
  RateLimiterUpdate update;
  if (bandwidth != nullptr && !bandwidth->IsNull()) {
    ASSIGN_OR_RETURN(update.bandwidth, ParseTokenBucket(*bandwidth, context + ".bandwidth"));
  }
  if (ops != nullptr && !ops->IsNull()) {
    ASSIGN_OR_RETURN(update.ops, ParseTokenBucket(*ops, context + ".ops"));
  }
  return update;
}

absl::StatusOr<std::optional<RateLimiterConfig>> ParseRateLimiter(const rapidjson::Value* value,
                                                                  const std::string& context) {
  if (value == nullptr || value->IsNull()) return std::nullopt;
  ASSIGN_OR_RETURN(RateLimiterUpdate update, ParseRateLimiterUpdate(*value, context));
  return ApplyUpdate(std::nullopt, update);
}

absl::StatusOr<PmemConfig> ParsePmem(const rapidjson::Value& value) {
  JsonReader r(value, "pmem[]");
  PmemConfig p;
  p.id = r.String("id", true).value_or("");
  p.path_on_host = r.String("path_on_host", true).value_or("");
  p.root_device = r.Bool("root_device", false).value_or(false);
  p.read_only = r.Bool("read_only", false).value_or(false);
  const rapidjson::Value* limiter = r.Raw("rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  std::string ctx = absl::StrCat("pmem[", p.id, "]");
  if (p.path_on_host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ctx, ".path_on_host must not be empty"));
  }
  ASSIGN_OR_RETURN(p.rate_limiter, ParseRateLimiter(limiter, ctx + ".rate_limiter"));
  return p;
}

absl::StatusOr<DriveConfig> ParseDrive(const rapidjson::Value& value) {
  JsonReader r(value, "drives[]");
  DriveConfig d;
  d.drive_id = r.String("drive_id", true).value_or("");
  d.is_root_device = r.Bool("is_root_device", true).value_or(false);
  d.path_on_host = r.String("path_on_host", true).value_or("");
  d.is_read_only = r.Bool("is_read_only", false).value_or(false);
  d.partuuid = r.String("partuuid", false).value_or("");
  std::optional<std::string> cache = r.String("cache_type", false);
  std::optional<std::string> engine = r.String("io_engine", false);
  const rapidjson::Value* limiter = r.Raw("rate_limiter");
  const rapidjson::Value* socket = r.Raw("socket");
  RETURN_IF_ERROR(r.Finish());
  std::string ctx = absl::StrCat("drives[", d.drive_id, "]");
  if (d.path_on_host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ctx, ".path_on_host must not be empty"));
  }
  if (cache && *cache != "Unsafe" && *cache != "Writeback") {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ".cache_type must be \"Unsafe\" or \"Writeback\""));
  }
  if (cache == "Writeback") d.cache_type = CacheType::kWriteback;
  if (engine && *engine != "Sync" && *engine != "Async") {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ".io_engine must be \"Sync\" or \"Async\""));
  }
  if (engine == "Async") d.io_engine = IoEngine::kAsync;
  ASSIGN_OR_RETURN(d.rate_limiter, ParseRateLimiter(limiter, ctx + ".rate_limiter"));
  if (socket != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ".socket: vhost-user drives are not supported"));
  }
  return d;
}

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text) {
  std::array<uint8_t, 6> mac;
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("guest_mac '", text, "' is not six hex bytes like AA:FC:00:00:00:01"));
  };
  if (text.size() != 17) return bad();
  for (size_t i = 0; i < 6; i++) {
    if (i < 5 && text[i * 3 + 2] != ':') return bad();
    int value = 0;
    for (size_t j = 0; j < 2; j++) {
      char c = absl::ascii_tolower(text[i * 3 + j]);
      if (!absl::ascii_isxdigit(c)) return bad();
      value = value * 16 + (absl::ascii_isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    mac[i] = static_cast<uint8_t>(value);
  }
  return mac;
}

absl::StatusOr<NetConfig> ParseNetworkInterface(const rapidjson::Value& value) {
  JsonReader r(value, "network-interfaces[]");
  NetConfig n;
  n.iface_id = r.String("iface_id", true).value_or("");
  n.host_dev_name = r.String("host_dev_name", true).value_or("");
  std::optional<std::string> mac = r.String("guest_mac", false);
  std::optional<uint64_t> mtu = r.Uint("mtu", false, kMinMtu, kMaxMtu);
  const rapidjson::Value* rx = r.Raw("rx_rate_limiter");
  const rapidjson::Value* tx = r.Raw("tx_rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  std::string ctx = absl::StrCat("network-interfaces[", n.iface_id, "]");
  if (mac) {
    absl::StatusOr<std::array<uint8_t, 6>> bytes = ParseMac(*mac);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat(ctx, ".", bytes.status().message()));
    n.guest_mac = *bytes;
  }
  if (mtu) n.mtu = static_cast<uint16_t>(*mtu);
  // An empty limiter limits nothing (Kata sends "rx_rate_limiter": {}).
  ASSIGN_OR_RETURN(n.rx_rate_limiter, ParseRateLimiter(rx, ctx + ".rx_rate_limiter"));
  ASSIGN_OR_RETURN(n.tx_rate_limiter, ParseRateLimiter(tx, ctx + ".tx_rate_limiter"));
  return n;
}

absl::StatusOr<BalloonConfig> ParseBalloon(const rapidjson::Value& value) {
  JsonReader r(value, "balloon");
  BalloonConfig b;
  b.amount_mib = r.Uint("amount_mib", true, 0, uint64_t{1} << 32).value_or(0);
  b.deflate_on_oom = r.Bool("deflate_on_oom", true).value_or(false);
  b.stats_polling_interval_s =
      static_cast<uint32_t>(r.Uint("stats_polling_interval_s", false, 0, UINT16_MAX).value_or(0));
  b.free_page_hinting = r.Bool("free_page_hinting", false).value_or(false);
  b.free_page_reporting = r.Bool("free_page_reporting", false).value_or(false);
  RETURN_IF_ERROR(r.Finish());
  return b;
}

absl::StatusOr<VsockConfig> ParseVsock(const rapidjson::Value& value) {
  JsonReader r(value, "vsock");
  VsockConfig v;
  // Firecracker still accepts its deprecated vsock_id.
  v.vsock_id = r.String("vsock_id", false).value_or("");
  v.guest_cid = static_cast<uint32_t>(r.Uint("guest_cid", true, 0, UINT32_MAX).value_or(0));
  v.uds_path = r.String("uds_path", true).value_or("");
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(ValidateVsock(v));
  return v;
}

absl::StatusOr<EntropyConfig> ParseEntropy(const rapidjson::Value& value) {
  JsonReader r(value, "entropy");
  EntropyConfig e;
  const rapidjson::Value* limiter = r.Raw("rate_limiter");
  RETURN_IF_ERROR(r.Finish());
  ASSIGN_OR_RETURN(e.rate_limiter, ParseRateLimiter(limiter, "entropy.rate_limiter"));
  return e;
}

absl::StatusOr<MemoryHotplugConfig> ParseMemoryHotplug(const rapidjson::Value& value) {
  JsonReader r(value, "memory-hotplug");
  MemoryHotplugConfig m;
  constexpr uint64_t kMax = UINT32_MAX;
  m.total_size_mib = static_cast<uint32_t>(r.Uint("total_size_mib", true, 0, kMax).value_or(0));
  m.slot_size_mib =
      static_cast<uint32_t>(r.Uint("slot_size_mib", false, 0, kMax).value_or(m.slot_size_mib));
  m.block_size_mib =
      static_cast<uint32_t>(r.Uint("block_size_mib", false, 0, kMax).value_or(m.block_size_mib));
  RETURN_IF_ERROR(r.Finish());
  RETURN_IF_ERROR(ValidateMemoryHotplug(m));
  return m;
}

absl::StatusOr<MmdsConfig> ParseMmdsConfig(const rapidjson::Value& value) {
  JsonReader r(value, "mmds-config");
  MmdsConfig m;
  std::string version = r.String("version", false).value_or("V1");
  const rapidjson::Value* ifaces = r.Raw("network_interfaces");
  std::optional<std::string> ipv4 = r.String("ipv4_address", false);
  m.imds_compat = r.Bool("imds_compat", false).value_or(false);
  RETURN_IF_ERROR(r.Finish());
  if (version != "V1" && version != "V2") {
    return absl::InvalidArgumentError(
        absl::StrCat("mmds-config.version '", version, "' must be \"V1\" or \"V2\""));
  }
  m.version = version == "V2" ? MmdsConfig::Version::kV2 : MmdsConfig::Version::kV1;
  if (ifaces == nullptr || !ifaces->IsArray()) {
    return absl::InvalidArgumentError(
        "mmds-config.network_interfaces must be an array of interface ids");
  }
  for (const rapidjson::Value& id : ifaces->GetArray()) {
    if (!id.IsString()) {
      return absl::InvalidArgumentError("mmds-config.network_interfaces[] must be strings");
    }
    m.network_interfaces.emplace_back(id.GetString(), id.GetStringLength());
  }
  if (ipv4) {
    in_addr addr;
    if (inet_pton(AF_INET, ipv4->c_str(), &addr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mmds-config.ipv4_address '", *ipv4, "' must be an IPv4 address (a.b.c.d)"));
    }
    m.ipv4_address = ntohl(addr.s_addr);
  }
  return m;
}

absl::StatusOr<LoggerConfig> ParseLogger(const rapidjson::Value& value) {
  JsonReader r(value, "logger");
  LoggerConfig l;
  l.log_path = r.String("log_path", false).value_or("");
  l.level = r.String("level", false);
  l.show_level = r.Bool("show_level", false);
  l.show_log_origin = r.Bool("show_log_origin", false);
  // Firecracker's is a Rust module path; Ember's, a source path prefix.
  l.module = r.String("module", false);
  RETURN_IF_ERROR(r.Finish());
  if (l.level) {
    // Firecracker reads the level in any case, and "Warn" for Warning;
    // ParseLogLevel wants Ember's spelling.
    std::string level = absl::AsciiStrToLower(*l.level);
    if (level == "warn") level = "warning";
    if (!level.empty()) level[0] = absl::ascii_toupper(level[0]);
    if (!ParseLogLevel(level)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logger.level '", *l.level, "' must be Error, Warning, Info, Debug, Trace or Off"));
    }
    l.level = level;
  }
  if (l.module) RETURN_IF_ERROR(CheckLogModule(*l.module, "logger.module"));
  return l;
}

absl::StatusOr<MetricsConfig> ParseMetrics(const rapidjson::Value& value) {
  JsonReader r(value, "metrics");
  MetricsConfig m;
  m.metrics_path = r.String("metrics_path", true).value_or("");
  m.emit_id = r.Bool("emit_id", false).value_or(false);
  const rapidjson::Value* properties = r.Raw("properties");
  RETURN_IF_ERROR(r.FinishIgnoringUnknown());
  if (properties != nullptr && !properties->IsNull()) {
    if (!properties->IsObject()) {
      return absl::InvalidArgumentError("metrics.properties must be a JSON object of strings");
    }
    m.properties.emplace();
    for (const auto& p : properties->GetObject()) {
      std::string key(p.name.GetString(), p.name.GetStringLength());
      if (!p.value.IsString()) {
        return absl::InvalidArgumentError(
            absl::StrCat("metrics.properties.", key, " must be a string"));
      }
      (*m.properties)[key] = std::string(p.value.GetString(), p.value.GetStringLength());
    }
  }
  if (m.metrics_path.empty()) {
    return absl::InvalidArgumentError("metrics.metrics_path must not be empty");
  }
  return m;
}

absl::StatusOr<VmConfig> ParseVmConfig(absl::string_view json) {
  rapidjson::Document doc;
  RETURN_IF_ERROR(ParseJsonObject(json, &doc));
  RETURN_IF_ERROR(CheckUtf8(doc));
  JsonReader r(doc, "");
  VmConfig config;
  if (const rapidjson::Value* v = r.Raw("boot-source")) {
    ASSIGN_OR_RETURN(config.boot_source, ParseBootSource(*v));
  }
  if (const rapidjson::Value* v = r.Raw("machine-config")) {
    ASSIGN_OR_RETURN(config.machine, ParseMachineConfig(*v));
  }
  if (const rapidjson::Value* v = r.Raw("drives"); v != nullptr && !v->IsNull()) {
    if (!v->IsArray()) return absl::InvalidArgumentError("drives must be a JSON array");
    for (const rapidjson::Value& item : v->GetArray()) {
      ASSIGN_OR_RETURN(DriveConfig drive, ParseDrive(item));
      config.drives.push_back(std::move(drive));
    }
    RETURN_IF_ERROR(ValidateDrives(config.drives));
  }
  if (const rapidjson::Value* v = r.Raw("pmem"); v != nullptr && !v->IsNull()) {
    if (!v->IsArray()) return absl::InvalidArgumentError("pmem must be a JSON array");
    for (const rapidjson::Value& item : v->GetArray()) {
      ASSIGN_OR_RETURN(PmemConfig pmem, ParsePmem(item));
      config.pmem.push_back(std::move(pmem));
    }
    RETURN_IF_ERROR(ValidatePmem(config.pmem, config.drives));
  }
  if (const rapidjson::Value* v = r.Raw("network-interfaces"); v != nullptr && !v->IsNull()) {
    if (!v->IsArray()) return absl::InvalidArgumentError("network-interfaces must be a JSON array");
    for (const rapidjson::Value& item : v->GetArray()) {
      ASSIGN_OR_RETURN(NetConfig net, ParseNetworkInterface(item));
      config.net.push_back(std::move(net));
    }
    RETURN_IF_ERROR(ValidateNet(config.net));
  }
  if (const rapidjson::Value* v = r.Raw("balloon"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.balloon, ParseBalloon(*v));
    RETURN_IF_ERROR(ValidateBalloon(*config.balloon, config.machine));
  }
  if (const rapidjson::Value* v = r.Raw("vsock"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.vsock, ParseVsock(*v));
  }
  if (const rapidjson::Value* v = r.Raw("cpu-config"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.cpu_config, ParseCpuConfigOrPath(*v));
    // Firecracker sets it after machine-config's: it wins, even as {}.
    config.machine.cpu_template = StaticCpuTemplate::kNone;
  }
  if (const rapidjson::Value* v = r.Raw("entropy"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.entropy, ParseEntropy(*v));
  }
  if (const rapidjson::Value* v = r.Raw("logger"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.logger, ParseLogger(*v));
  }
  if (const rapidjson::Value* v = r.Raw("metrics"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.metrics, ParseMetrics(*v));
  }
  if (const rapidjson::Value* v = r.Raw("serial")) {
    ASSIGN_OR_RETURN(config.serial, ParseSerial(*v));
  }
  if (const rapidjson::Value* v = r.Raw("mmds-config"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.mmds, ParseMmdsConfig(*v));
    RETURN_IF_ERROR(ValidateMmds(*config.mmds, config.net));
  }
  if (const rapidjson::Value* v = r.Raw("memory-hotplug"); v != nullptr && !v->IsNull()) {
    ASSIGN_OR_RETURN(config.memory_hotplug, ParseMemoryHotplug(*v));
  }
  RETURN_IF_ERROR(r.Finish());
  return config;
}

absl::StatusOr<VmConfig> LoadVmConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus(absl::StrCat("open config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<VmConfig> config = ParseVmConfig(text.str());
  // As Firecracker, the files it names are opened now, not at the start.
  if (config.ok()) {
    if (absl::Status st = CheckHostResources(*config); !st.ok()) config = st;
  }
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

namespace {

// Writers, with the field names the parsers above read.
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

template <typename Write>
std::string ToJson(Write write) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  write(w);
  return buf.GetString();
}

void Str(Writer& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
}

// Firecracker writes a field it has no value for as null, not leaving it
// out; the parsers read null as absent.
void Null(Writer& w, const char* key) {
  w.Key(key);
  w.Null();
}

void WriteMachine(Writer& w, const MachineConfig& m) {
  w.StartObject();
  w.Key("vcpu_count");
  w.Uint(m.vcpu_count);
  w.Key("mem_size_mib");
  w.Uint64(m.mem_size_mib);
  w.Key("smt");
  w.Bool(m.smt);
  w.Key("track_dirty_pages");
  w.Bool(m.track_dirty_pages);
  Str(w, "huge_pages", HugePagesName(m.huge_pages));
  // Firecracker leaves it out unless a static template is set.
  if (m.cpu_template != StaticCpuTemplate::kNone) {
    Str(w, "cpu_template", StaticCpuTemplateName(m.cpu_template));
  }
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
  w.Key("free_page_hinting");
  w.Bool(b.free_page_hinting);
  w.Key("free_page_reporting");
  w.Bool(b.free_page_reporting);
  w.EndObject();
}

void WriteVsock(Writer& w, const VsockConfig& v) {
  w.StartObject();
  if (!v.vsock_id.empty()) Str(w, "vsock_id", v.vsock_id);
  w.Key("guest_cid");
  w.Uint(v.guest_cid);
  Str(w, "uds_path", v.uds_path);
  w.EndObject();
}

// As Firecracker shows them: a missing bucket and no one_time_burst as null.
void WriteBucket(Writer& w, const char* key, const std::optional<TokenBucketConfig>& b) {
  if (!b) return Null(w, key);
  w.Key(key);
  w.StartObject();
  w.Key("size");
  w.Uint64(b->size);
  if (b->one_time_burst > 0) {
    w.Key("one_time_burst");
    w.Uint64(b->one_time_burst);
  } else {
    Null(w, "one_time_burst");
  }
  w.Key("refill_time");
  w.Uint64(b->refill_time_ms);
  w.EndObject();
}

void WriteRateLimiter(Writer& w, const char* key, const std::optional<RateLimiterConfig>& rl) {
  if (!rl) return;
  w.Key(key);
  w.StartObject();
  WriteBucket(w, "bandwidth", rl->bandwidth);
  WriteBucket(w, "ops", rl->ops);
  w.EndObject();
}

// As Firecracker shows a device's limiter: null when there is none.
void WriteRateLimiterOrNull(Writer& w, const char* key,
                            const std::optional<RateLimiterConfig>& rl) {
  if (!rl) return Null(w, key);
  WriteRateLimiter(w, key, rl);
}

void WriteMemoryHotplug(Writer& w, const MemoryHotplugConfig& m) {
  w.StartObject();
  w.Key("total_size_mib");
  w.Uint(m.total_size_mib);
  w.Key("slot_size_mib");
  w.Uint(m.slot_size_mib);
  w.Key("block_size_mib");
  w.Uint(m.block_size_mib);
  w.EndObject();
}

void WriteEntropy(Writer& w, const EntropyConfig& e) {
  w.StartObject();
  WriteRateLimiterOrNull(w, "rate_limiter", e.rate_limiter);
  w.EndObject();
}

// Firecracker's MmdsConfig as serde writes it.
void WriteMmds(Writer& w, const MmdsConfig& m) {
  w.StartObject();
  Str(w, "version", m.version == MmdsConfig::Version::kV2 ? "V2" : "V1");
  w.Key("network_interfaces");
  w.StartArray();
  for (const std::string& id : m.network_interfaces) w.String(id.c_str());
  w.EndArray();
  in_addr addr{htonl(m.ipv4_address)};
  char text[INET_ADDRSTRLEN];
  Str(w, "ipv4_address", inet_ntop(AF_INET, &addr, text, sizeof(text)));
  w.Key("imds_compat");
  w.Bool(m.imds_compat);
  w.EndObject();
}

void WritePmem(Writer& w, const PmemConfig& p) {
  w.StartObject();
  Str(w, "id", p.id);
  Str(w, "path_on_host", p.path_on_host);
  w.Key("root_device");
  w.Bool(p.root_device);
  w.Key("read_only");
  w.Bool(p.read_only);
  WriteRateLimiterOrNull(w, "rate_limiter", p.rate_limiter);
  w.EndObject();
}

void WriteDrive(Writer& w, const DriveConfig& d) {
  w.StartObject();
  Str(w, "drive_id", d.drive_id);
  if (d.partuuid.empty()) {
    Null(w, "partuuid");
  } else {
    Str(w, "partuuid", d.partuuid);
  }
  w.Key("is_root_device");
  w.Bool(d.is_root_device);
  Str(w, "cache_type", d.cache_type == CacheType::kWriteback ? "Writeback" : "Unsafe");
  w.Key("is_read_only");
  w.Bool(d.is_read_only);
  Str(w, "path_on_host", d.path_on_host);
  WriteRateLimiterOrNull(w, "rate_limiter", d.rate_limiter);
  Str(w, "io_engine", d.io_engine == IoEngine::kAsync ? "Async" : "Sync");
  Null(w, "socket");  // vhost-user drives: none here
  w.EndObject();
}

void WriteNet(Writer& w, const NetConfig& n) {
  w.StartObject();
  Str(w, "iface_id", n.iface_id);
  Str(w, "host_dev_name", n.host_dev_name);
  if (n.guest_mac) {
    const auto& m = *n.guest_mac;
    Str(w, "guest_mac",
        absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]));
  } else {
    Null(w, "guest_mac");
  }
  if (n.mtu) {
    w.Key("mtu");
    w.Uint(*n.mtu);
  } else {
    Null(w, "mtu");  // the guest's default
  }
  WriteRateLimiterOrNull(w, "rx_rate_limiter", n.rx_rate_limiter);
  WriteRateLimiterOrNull(w, "tx_rate_limiter", n.tx_rate_limiter);
  w.EndObject();
}

// Before a PUT /boot-source Firecracker shows an empty kernel path.
void WriteBootSource(Writer& w, const std::optional<BootSourceConfig>& b) {
  w.StartObject();
  Str(w, "kernel_image_path", b ? b->kernel_image_path : "");
  if (b && !b->initrd_path.empty()) {
    Str(w, "initrd_path", b->initrd_path);
  } else {
    Null(w, "initrd_path");
  }
  if (b && b->boot_args) {
    Str(w, "boot_args", *b->boot_args);
  } else {
    Null(w, "boot_args");
  }
  w.EndObject();
}

// Firecracker's keys, in its order, each always there: null (or []) for
// what is not configured. The logger and metrics are not part of it, as in
// Firecracker; sections Ember does not serve yet are always empty.
void WriteVmConfig(Writer& w, const VmConfig& c) {
  w.StartObject();
  w.Key("balloon");
  if (c.balloon) {
    WriteBalloon(w, *c.balloon);
  } else {
    w.Null();
  }
  // The root drive first, as Firecracker lists (and attaches) them.
  w.Key("drives");
  w.StartArray();
  for (const DriveConfig& d : c.drives) {
    if (d.is_root_device) WriteDrive(w, d);
  }
  for (const DriveConfig& d : c.drives) {
    if (!d.is_root_device) WriteDrive(w, d);
  }
  w.EndArray();
  w.Key("boot-source");
  WriteBootSource(w, c.boot_source);
  if (c.cpu_config) {
    w.Key("cpu-config");
    WriteCpuConfig(w, *c.cpu_config);
  } else {
    Null(w, "cpu-config");
  }
  Null(w, "logger");
  w.Key("machine-config");
  WriteMachine(w, c.machine);
  Null(w, "metrics");
  w.Key("mmds-config");
  if (c.mmds) {
    WriteMmds(w, *c.mmds);
  } else {
    w.Null();
  }
  w.Key("network-interfaces");
  w.StartArray();
  for (const NetConfig& n : c.net) WriteNet(w, n);
  w.EndArray();
  w.Key("vsock");
  if (c.vsock) {
    WriteVsock(w, *c.vsock);
  } else {
    w.Null();
  }
  w.Key("entropy");
  if (c.entropy) {
    WriteEntropy(w, *c.entropy);
  } else {
    w.Null();
  }
  w.Key("pmem");
  w.StartArray();
  for (const PmemConfig& p : c.pmem) WritePmem(w, p);
  w.EndArray();
  w.Key("memory-hotplug");
  if (c.memory_hotplug) {
    WriteMemoryHotplug(w, *c.memory_hotplug);
  } else {
    w.Null();
  }
  w.EndObject();
}

}  // namespace

std::string VmConfigToJson(const VmConfig& config) {
  return ToJson([&](Writer& w) { WriteVmConfig(w, config); });
}

std::string MachineConfigToJson(const MachineConfig& machine) {
  return ToJson([&](Writer& w) { WriteMachine(w, machine); });
}

std::string BalloonConfigToJson(const BalloonConfig& balloon) {
  return ToJson([&](Writer& w) { WriteBalloon(w, balloon); });
}

}  // namespace ember::api
