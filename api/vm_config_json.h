// Firecracker's configuration JSON read into the typed config and written
// back out: the config file, the API's request bodies (so both refuse the
// same things the same way) and the API's answers that show a config.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include <rapidjson/document.h>

#include "absl/status/statusor.h"
#include "src/config/vm_config.h"

namespace ember::api {

absl::StatusOr<BootSourceConfig> ParseBootSource(const rapidjson::Value& value);
absl::StatusOr<MachineConfig> ParseMachineConfig(const rapidjson::Value& value);
// machine-config's cpu_template, as given (or not): a static template's
// name; a custom one goes to /cpu-config.
absl::StatusOr<std::optional<StaticCpuTemplate>> ParseCpuTemplateField(
    const std::optional<std::string>& value);
// A huge_pages value ("None", "Transparent" or "2M"); `field` names it in
// the message.
absl::StatusOr<std::optional<HugePages>> ParseHugePagesField(
    const std::optional<std::string>& value, absl::string_view field);
absl::StatusOr<SerialConfig> ParseSerial(const rapidjson::Value& value);
// A rate limiter object ("drives[x].rate_limiter" names it in messages):
// absent, null or {} is no limiting.
absl::StatusOr<std::optional<RateLimiterConfig>> ParseRateLimiter(const rapidjson::Value* value,
                                                                  const std::string& context);
// The same for a PATCH: which buckets change, and which go.
absl::StatusOr<RateLimiterUpdate> ParseRateLimiterUpdate(const rapidjson::Value& value,
                                                         const std::string& context);
absl::StatusOr<DriveConfig> ParseDrive(const rapidjson::Value& value);
absl::StatusOr<PmemConfig> ParsePmem(const rapidjson::Value& value);
absl::StatusOr<NetConfig> ParseNetworkInterface(const rapidjson::Value& value);
absl::StatusOr<BalloonConfig> ParseBalloon(const rapidjson::Value& value);
absl::StatusOr<VsockConfig> ParseVsock(const rapidjson::Value& value);
absl::StatusOr<EntropyConfig> ParseEntropy(const rapidjson::Value& value);
absl::StatusOr<MemoryHotplugConfig> ParseMemoryHotplug(const rapidjson::Value& value);
// Its form only; ValidateMmds checks it against the interfaces.
absl::StatusOr<MmdsConfig> ParseMmdsConfig(const rapidjson::Value& value);
absl::StatusOr<LoggerConfig> ParseLogger(const rapidjson::Value& value);
absl::StatusOr<MetricsConfig> ParseMetrics(const rapidjson::Value& value);
// "AA:FC:00:00:00:01" into bytes.
absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text);

// A config file's text (`--config-file`), in Firecracker's format.
absl::StatusOr<VmConfig> ParseVmConfig(absl::string_view json);
absl::StatusOr<VmConfig> LoadVmConfigFile(const std::string& path);

// The configuration as GET /vm/config shows it; ParseVmConfig reads it back
// (snapshots carry it). The logger, metrics and serial sections are left out.
std::string VmConfigToJson(const VmConfig& config);
// GET /machine-config and GET /balloon.
std::string MachineConfigToJson(const MachineConfig& machine);
std::string BalloonConfigToJson(const BalloonConfig& balloon);

}  // namespace ember::api
