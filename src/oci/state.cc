#include "src/oci/state.h"

#include <dirent.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "src/common/json_reader.h"

namespace ember::oci {
namespace {

template <typename Writer>
void Annotations(Writer* w, const std::map<std::string, std::string>& annotations) {
  w->StartObject();
  for (const auto& [k, v] : annotations) {
    w->Key(k.c_str());
    w->String(v.c_str());
  }
  w->EndObject();
}

}  // namespace

const char* StatusName(Status status) {
  switch (status) {
    case Status::kCreating:
      return "creating";
    case Status::kCreated:
      return "created";
    case Status::kRunning:
      return "running";
    case Status::kPaused:
      return "paused";
    case Status::kStopped:
      return "stopped";
  }
  return "unknown";
}

uint64_t ProcessStartTime(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // The command name may hold spaces and parentheses: fields count from
  // the last ')'.
  size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  // Field 3 is the state; 22 the start time.
  for (int n = 3; n <= 22 && fields >> field; ++n) {
    if (n == 3 && (field == "Z" || field == "X")) return 0;
    if (n == 22) return std::stoull(field);
  }
  return 0;
}

ProcessRef RefOf(pid_t pid) { return {pid, ProcessStartTime(pid)}; }

bool Alive(const ProcessRef& ref) {
  if (ref.pid <= 0) return false;
  uint64_t start = ProcessStartTime(ref.pid);
  return start != 0 && (ref.start_time == 0 || start == ref.start_time);
}

void RecordExec(const std::string& dir, const ProcessRef& monitor) {
  std::ofstream(dir + "/exec-" + std::to_string(monitor.pid)) << monitor.start_time << "\n";
}

std::vector<ProcessRef> LiveExecs(const std::string& dir) {
  std::vector<ProcessRef> live;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return live;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("exec-", 0) != 0) continue;
    ProcessRef ref;
    ref.pid = static_cast<pid_t>(std::strtol(name.c_str() + 5, nullptr, 10));
    std::ifstream(dir + "/" + name) >> ref.start_time;
    // An unknown start time would let a reused pid pass.
    if (ref.start_time != 0 && Alive(ref)) live.push_back(ref);
  }
  closedir(d);
  std::sort(live.begin(), live.end(),
            [](const ProcessRef& a, const ProcessRef& b) { return a.pid < b.pid; });
  return live;
}

Status StatusOf(const ContainerRecord& record) {
  if (!Alive(record.monitor)) return Status::kStopped;
  if (record.paused) return Status::kPaused;
  return record.started ? Status::kRunning : Status::kCreated;
}

std::string RecordToJson(const ContainerRecord& r) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("id");
  w.String(r.id.c_str());
  w.Key("bundle");
  w.String(r.bundle.c_str());
  w.Key("rootfs");
  w.String(r.rootfs.c_str());
  w.Key("created");
  w.String(r.created.c_str());
  w.Key("monitor_pid");
  w.Int(r.monitor.pid);
  w.Key("monitor_start");
  w.Uint64(r.monitor.start_time);
  w.Key("vmm_pid");
  w.Int(r.vmm.pid);
  w.Key("vmm_start");
  w.Uint64(r.vmm.start_time);
  w.Key("started");
  w.Bool(r.started);
  w.Key("jail_dir");
  w.String(r.jail_dir.c_str());
  w.Key("uds");
  w.String(r.uds.c_str());
  w.Key("paused");
  w.Bool(r.paused);
  w.Key("sandbox");
  w.Bool(r.sandbox);
  w.Key("cgroup");
  w.String(r.cgroup.c_str());
  w.Key("cgroup_version");
  w.Int(r.cgroup_version);
  w.Key("netns");
  w.String(r.netns.c_str());
  w.Key("annotations");
  Annotations(&w, r.annotations);
  w.EndObject();
  return buffer.GetString();
}

absl::StatusOr<ContainerRecord> RecordFromJson(const std::string& json) {
  rapidjson::Document doc;
  if (auto s = ParseJsonObject(json, &doc); !s.ok()) return s;
  auto str = [&](const char* k) {
    return doc.HasMember(k) && doc[k].IsString() ? std::string(doc[k].GetString()) : "";
  };
  auto num = [&](const char* k) -> uint64_t {
    return doc.HasMember(k) && doc[k].IsUint64() ? doc[k].GetUint64() : 0;
  };
  ContainerRecord r;
  r.id = str("id");
  if (r.id.empty()) return absl::DataLossError("state.json has no id");
  r.bundle = str("bundle");
  r.rootfs = str("rootfs");
  r.created = str("created");
  r.monitor = {static_cast<pid_t>(num("monitor_pid")), num("monitor_start")};
  r.vmm = {static_cast<pid_t>(num("vmm_pid")), num("vmm_start")};
  r.started = doc.HasMember("started") && doc["started"].IsBool() && doc["started"].GetBool();
  r.jail_dir = str("jail_dir");
  r.uds = str("uds");
  r.paused = doc.HasMember("paused") && doc["paused"].IsBool() && doc["paused"].GetBool();
  r.sandbox = doc.HasMember("sandbox") && doc["sandbox"].IsBool() && doc["sandbox"].GetBool();
  r.cgroup = str("cgroup");
  r.cgroup_version = static_cast<int>(num("cgroup_version"));
  r.netns = str("netns");
  if (doc.HasMember("annotations") && doc["annotations"].IsObject()) {
    for (const auto& m : doc["annotations"].GetObject()) {
      if (m.value.IsString()) r.annotations[m.name.GetString()] = m.value.GetString();
    }
  }
  return r;
}

template <typename Writer>
void WriteOciState(Writer& w, const ContainerRecord& r, Status status) {
  w.StartObject();
  w.Key("ociVersion");
  w.String(kOciVersion);
  w.Key("id");
  w.String(r.id.c_str());
  w.Key("pid");
  w.Int(status == Status::kStopped ? 0 : r.monitor.pid);
  w.Key("status");
  w.String(StatusName(status));
  w.Key("bundle");
  w.String(r.bundle.c_str());
  w.Key("rootfs");
  w.String(r.rootfs.c_str());
  w.Key("created");
  w.String(r.created.c_str());
  w.Key("owner");
  w.String("");
  if (!r.annotations.empty()) {
    w.Key("annotations");
    Annotations(&w, r.annotations);
  }
  w.EndObject();
}

std::string OciStateJson(const ContainerRecord& r, Status status, bool pretty) {
  rapidjson::StringBuffer buffer;
  if (pretty) {
    rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buffer);
    w.SetIndent(' ', 2);
    WriteOciState(w, r, status);
  } else {
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    WriteOciState(w, r, status);
  }
  return buffer.GetString();
}

std::string NowRfc3339() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &t);
  std::snprintf(buf + n, sizeof(buf) - n, ".%09ldZ", ts.tv_nsec);
  return buf;
}

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 1024 || id == "." || id == "..") return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace ember::oci
