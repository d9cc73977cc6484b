#include "api/metrics_json.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "api/metrics_schema.h"

namespace ember::api {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;
using Fields = std::span<const MetricField>;

// One value as the line shows it; a count has become its change.
struct Value {
  std::string name;
  uint64_t value;
  bool count;
};
using Values = std::vector<Value>;

void Key(Writer& w, std::string_view key) {
  w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
}

// Whether `name` is a count: Firecracker's kind where it has the field
// ("read_agg.sum_us" is one, "read_agg.min_us" not), else what the
// reporter said.
bool IsCount(Fields fields, std::string_view name, bool reported_as_count) {
  std::string_view base = name.substr(0, name.find('.'));
  for (const MetricField& f : fields) {
    if (base != f.name) continue;
    if (f.kind == MetricKind::kLatency) return name.substr(base.size()) == ".sum_us";
    if (base == name) return f.kind == MetricKind::kCount;
  }
  return reported_as_count;
}

// Writes one group: Firecracker's fields first (0 when `values` lacks
// one), then the rest of `values`.
void WriteGroup(Writer& w, std::string_view name, Fields fields, const Values& values) {
  std::vector<bool> used(values.size());
  auto take = [&](std::string_view field) -> uint64_t {
    for (size_t i = 0; i < values.size(); i++) {
      if (values[i].name == field) {
        used[i] = true;
        return values[i].value;
      }
    }
    return 0;
  };
  Key(w, name);
  w.StartObject();
  for (const MetricField& f : fields) {
    Key(w, f.name);
    if (f.kind != MetricKind::kLatency) {
      w.Uint64(take(f.name));
      continue;
    }
    std::string prefix = f.name;
    w.StartObject();
    for (const char* part : {"min_us", "max_us", "sum_us"}) {
      w.Key(part);
      w.Uint64(take(prefix + "." + part));
    }
    w.EndObject();
  }
  for (size_t i = 0; i < values.size(); i++) {
    if (used[i]) continue;
    Key(w, values[i].name);
    w.Uint64(values[i].value);
  }
  w.EndObject();
}

}  // namespace

std::string MetricsWriter::Line(const Metrics& m) {
  // Counts become their change since the last line.
  auto resolve = [this](const MetricGroup& g, Fields fields) {
    Values out;
    auto add = [&](const MetricValues& from, bool counts) {
      for (const auto& [name, value] : from) {
        if (!IsCount(fields, name, counts)) {
          out.push_back({name, value, false});
          continue;
        }
        uint64_t& last = last_[g.name + "/" + name];
        out.push_back({name, value >= last ? value - last : value, true});
        last = value;
      }
    };
    add(g.counts, true);
    add(g.levels, false);
    return out;
  };

  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("utc_timestamp_ms");
  w.Uint64(m.utc_timestamp_ms);
  WriteMetricsLabels(w, m.id, m.properties);
  std::vector<bool> written(m.groups.size());
  for (const MetricGroupSpec& spec : FirecrackerMetricGroups()) {
    Values values;
    if (spec.per_device) {
      // Each device's group, then their sum (of counts only: a sum of
      // least or most latencies means nothing, Firecracker writes 0).
      std::string prefix = std::string(spec.name) + "_";
      for (size_t i = 0; i < m.groups.size(); i++) {
        if (!absl::StartsWith(m.groups[i].name, prefix)) continue;
        written[i] = true;
        Values device = resolve(m.groups[i], spec.fields);
        WriteGroup(w, m.groups[i].name, spec.fields, device);
        for (const Value& v : device) {
          if (!v.count) continue;
          auto sum = std::find_if(values.begin(), values.end(),
                                  [&](const Value& s) { return s.name == v.name; });
          if (sum == values.end()) {
            values.push_back(v);
          } else {
            sum->value += v.value;
          }
        }
      }
    } else {
      for (size_t i = 0; i < m.groups.size(); i++) {
        if (m.groups[i].name != spec.name) continue;
        written[i] = true;
        values = resolve(m.groups[i], spec.fields);
      }
    }
    WriteGroup(w, spec.name, spec.fields, values);
  }
  // Groups of Ember's own; the VM's state leads "ember".
  Values ember;
  for (size_t i = 0; i < m.groups.size(); i++) {
    if (written[i]) continue;
    if (m.groups[i].name == "ember") {
      ember = resolve(m.groups[i], {});
      continue;
    }
    WriteGroup(w, m.groups[i].name, {}, resolve(m.groups[i], {}));
  }
  w.Key("ember");
  w.StartObject();
  w.Key("vm_state");
  w.String(m.vm_state.c_str());
  for (const Value& v : ember) {
    Key(w, v.name);
    w.Uint64(v.value);
  }
  w.EndObject();
  w.EndObject();
  return buf.GetString();
}

}  // namespace ember::api
