// JSON bodies of Firecracker's boot-source and machine-config, and the whole
// config file, parsed into the VMM's typed config. Shared by the config file
// and (later) the HTTP API, so both refuse the same things the same way.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include <rapidjson/document.h>

#include "absl/status/statusor.h"
#include "src/config/vm_config.h"

namespace ember::api {

absl::StatusOr<BootSourceConfig> ParseBootSource(const rapidjson::Value& value);
absl::StatusOr<MachineConfig> ParseMachineConfig(const rapidjson::Value& value);
absl::StatusOr<SerialConfig> ParseSerial(const rapidjson::Value& value);
absl::StatusOr<DriveConfig> ParseDrive(const rapidjson::Value& value);
absl::StatusOr<NetConfig> ParseNetworkInterface(const rapidjson::Value& value);
absl::StatusOr<BalloonConfig> ParseBalloon(const rapidjson::Value& value);
absl::StatusOr<LoggerConfig> ParseLogger(const rapidjson::Value& value);
absl::StatusOr<MetricsConfig> ParseMetrics(const rapidjson::Value& value);
// "AA:FC:00:00:00:01" into bytes.
absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text);

// A config file's text (`--config-file`), in Firecracker's format.
absl::StatusOr<VmConfig> ParseVmConfig(absl::string_view json);
absl::StatusOr<VmConfig> LoadVmConfigFile(const std::string& path);

}  // namespace ember::api
