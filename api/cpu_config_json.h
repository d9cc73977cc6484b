// PUT /cpu-config and the config file's "cpu-config": Firecracker's x86_64
// custom CPU template (src/config/cpu_template.h) from and to JSON.
#pragma once

#include <string>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/status/statusor.h"
#include "src/config/cpu_template.h"

namespace ember::api {

absl::StatusOr<CpuTemplate> ParseCpuConfig(const rapidjson::Value& value);
// The config file's "cpu-config" may also name a file that holds it.
absl::StatusOr<CpuTemplate> ParseCpuConfigOrPath(const rapidjson::Value& value);
// As Firecracker writes a template: numbers in hex, bitmaps at full width.
void WriteCpuConfig(rapidjson::Writer<rapidjson::StringBuffer>& w, const CpuTemplate& t);

}  // namespace ember::api
