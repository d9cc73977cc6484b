#include "api/metrics_json.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace ember::api {

std::string MetricsToJson(const Metrics& m) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("utc_timestamp_ms");
  w.Uint64(m.utc_timestamp_ms);
  w.Key("api_server");
  w.StartObject();
  w.Key("requests");
  w.Uint64(m.api_requests);
  w.Key("faults");
  w.Uint64(m.api_faults);
  w.EndObject();
  w.Key("vm");
  w.StartObject();
  w.Key("state");
  w.String(m.vm_state.c_str());
  w.EndObject();
  w.Key("serial");
  w.StartObject();
  w.Key("dropped_input");
  w.Uint64(m.serial_dropped_input);
  w.EndObject();
  for (const auto& [device, counters] : m.devices) {
    w.Key(device.c_str());
    w.StartObject();
    for (const auto& [name, value] : counters) {
      w.Key(name.c_str());
      w.Uint64(value);
    }
    w.EndObject();
  }
  w.EndObject();
  return buf.GetString();
}

}  // namespace ember::api
