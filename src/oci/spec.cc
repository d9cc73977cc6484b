#include "src/oci/spec.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <type_traits>
#include <utility>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "src/common/json_reader.h"
#include "src/common/status_macros.h"
#include "src/oci/hooks.h"

namespace ember::oci {
namespace {

absl::Status Invalid(absl::string_view context, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(context, ": ", what));
}

absl::Status Strings(const rapidjson::Value& obj, const char* name, absl::string_view context,
                     std::vector<std::string>* out) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return absl::OkStatus();
  if (!it->value.IsArray()) return Invalid(context, absl::StrCat(name, " must be an array"));
  for (const auto& v : it->value.GetArray()) {
    if (!v.IsString()) return Invalid(context, absl::StrCat(name, " must hold strings"));
    std::string s(v.GetString(), v.GetStringLength());
    if (s.find('\0') != std::string::npos) {
      return Invalid(context, absl::StrCat(name, " has a NUL byte"));
    }
    out->push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> Id(const rapidjson::Value& obj, const char* name,
                            absl::string_view context) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) return 0u;
  if (!it->value.IsUint()) return Invalid(context, absl::StrCat(name, " must be a uint32"));
  return it->value.GetUint();
}

// Linux's number for an RLIMIT_* name, or -1.
int RlimitNumber(absl::string_view name) {
  static constexpr const char* kNames[] = {
      "RLIMIT_CPU",     "RLIMIT_FSIZE",   "RLIMIT_DATA",       "RLIMIT_STACK",
      "RLIMIT_CORE",    "RLIMIT_RSS",     "RLIMIT_NPROC",      "RLIMIT_NOFILE",
      "RLIMIT_MEMLOCK", "RLIMIT_AS",      "RLIMIT_LOCKS",      "RLIMIT_SIGPENDING",
      "RLIMIT_MSGQUEUE", "RLIMIT_NICE",   "RLIMIT_RTPRIO",     "RLIMIT_RTTIME"};
  for (int i = 0; i < static_cast<int>(std::size(kNames)); ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

absl::StatusOr<ProcessSpec> ProcessFrom(const rapidjson::Value& p, absl::string_view context) {
  if (!p.IsObject()) return Invalid(context, "must be an object");
  ProcessSpec spec;
  auto term = p.FindMember("terminal");
  if (term != p.MemberEnd()) {
    if (!term->value.IsBool()) return Invalid(context, "terminal must be a boolean");
    spec.terminal = term->value.GetBool();
  }
  if (auto s = Strings(p, "args", context, &spec.args); !s.ok()) return s;
  if (spec.args.empty() || spec.args[0].empty()) return Invalid(context, "args must not be empty");
  if (auto s = Strings(p, "env", context, &spec.env); !s.ok()) return s;
  for (const auto& e : spec.env) {
    if (e.empty() || e[0] == '=') return Invalid(context, "env entry without a name: " + e);
  }
  // runc takes "NAME" without '=' as an empty value.
  for (auto& e : spec.env) {
    if (e.find('=') == std::string::npos) e += "=";
  }
  auto cwd = p.FindMember("cwd");
  if (cwd != p.MemberEnd()) {
    if (!cwd->value.IsString() || cwd->value.GetStringLength() == 0 ||
        cwd->value.GetString()[0] != '/') {
      return Invalid(context, "cwd must be an absolute path");
    }
    spec.cwd = cwd->value.GetString();
  }
  auto limits = p.FindMember("rlimits");
  if (limits != p.MemberEnd() && !limits->value.IsNull()) {
    if (!limits->value.IsArray()) return Invalid(context, "rlimits must be an array");
    for (const auto& l : limits->value.GetArray()) {
      auto type = l.IsObject() ? l.FindMember("type") : l.MemberEnd();
      auto soft = l.IsObject() ? l.FindMember("soft") : l.MemberEnd();
      auto hard = l.IsObject() ? l.FindMember("hard") : l.MemberEnd();
      if (!l.IsObject() || type == l.MemberEnd() || !type->value.IsString() ||
          soft == l.MemberEnd() || !soft->value.IsUint64() || hard == l.MemberEnd() ||
          !hard->value.IsUint64()) {
        return Invalid(context, "rlimits[] must be objects with a type, soft and hard");
      }
      int resource = RlimitNumber(type->value.GetString());
      if (resource < 0) {
        return Invalid(context, absl::StrCat("rlimits: unknown type ", type->value.GetString()));
      }
      if (soft->value.GetUint64() > hard->value.GetUint64()) {
        return Invalid(context, absl::StrCat("rlimits: ", type->value.GetString(),
                                             "'s soft limit is above its hard limit"));
      }
      // One per resource: a later entry replaces an earlier one.
      auto same = std::find_if(spec.rlimits.begin(), spec.rlimits.end(),
                               [&](const ProcessSpec::Rlimit& r) {
                                 return r.resource == static_cast<uint32_t>(resource);
                               });
      if (same == spec.rlimits.end()) same = spec.rlimits.insert(same, ProcessSpec::Rlimit{});
      *same = {static_cast<uint32_t>(resource), soft->value.GetUint64(),
               hard->value.GetUint64()};
    }
  }
  auto oom = p.FindMember("oomScoreAdj");
  if (oom != p.MemberEnd() && !oom->value.IsNull()) {
    if (!oom->value.IsInt() || oom->value.GetInt() < -1000 || oom->value.GetInt() > 1000) {
      return Invalid(context, "oomScoreAdj must be an integer from -1000 to 1000");
    }
    spec.oom_score_adj = oom->value.GetInt();
  }
  auto nnp = p.FindMember("noNewPrivileges");
  if (nnp != p.MemberEnd() && !nnp->value.IsNull()) {
    if (!nnp->value.IsBool()) return Invalid(context, "noNewPrivileges must be a boolean");
    spec.no_new_privileges = nnp->value.GetBool();
  }
  auto caps = p.FindMember("capabilities");
  if (caps != p.MemberEnd() && !caps->value.IsNull()) {
    if (!caps->value.IsObject()) return Invalid(context, "capabilities must be an object");
    std::string ctx = absl::StrCat(context, ".capabilities");
    spec.has_capabilities = true;
    for (auto [name, mask] : {std::pair{"bounding", &spec.cap_bounding},
                              {"effective", &spec.cap_effective},
                              {"permitted", &spec.cap_permitted},
                              {"inheritable", &spec.cap_inheritable},
                              {"ambient", &spec.cap_ambient}}) {
      std::vector<std::string> names;
      if (auto s = Strings(caps->value, name, ctx, &names); !s.ok()) return s;
      for (const std::string& n : names) {
        // As runc: a name this host does not know is left out, not refused.
        int number = CapabilityNumber(n);
        if (number >= 0) *mask |= uint64_t{1} << number;
      }
    }
  }
  auto user = p.FindMember("user");
  if (user != p.MemberEnd()) {
    const rapidjson::Value& u = user->value;
    if (!u.IsObject()) return Invalid(context, "user must be an object");
    std::string ctx = absl::StrCat(context, ".user");
    auto uid = Id(u, "uid", ctx);
    auto gid = Id(u, "gid", ctx);
    if (!uid.ok()) return uid.status();
    if (!gid.ok()) return gid.status();
    spec.uid = *uid;
    spec.gid = *gid;
    auto extra = u.FindMember("additionalGids");
    if (extra != u.MemberEnd() && !extra->value.IsNull()) {
      if (!extra->value.IsArray()) return Invalid(ctx, "additionalGids must be an array");
      for (const auto& g : extra->value.GetArray()) {
        if (!g.IsUint()) return Invalid(ctx, "additionalGids must hold uint32s");
        spec.additional_gids.push_back(g.GetUint());
      }
    }
  }
  return spec;
}

bool ParseAnnotationUint(const std::map<std::string, std::string>& a, const std::string& key,
                         uint32_t min, uint32_t max, uint32_t* out, absl::Status* status) {
  auto it = a.find(key);
  if (it == a.end()) return true;
  uint32_t v;
  if (!absl::SimpleAtoi(it->second, &v) || v < min || v > max) {
    *status = absl::InvalidArgumentError(absl::StrCat("annotation ", key, " must be an integer in ",
                                                      min, "..", max, ", not \"", it->second,
                                                      "\""));
    return false;
  }
  *out = v;
  return true;
}

// A number of linux.resources: absent or null leaves `out` unset.
template <typename T>
absl::Status Number(const rapidjson::Value& obj, const char* name, absl::string_view context,
                    std::optional<T>* out) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return absl::OkStatus();
  bool fits = std::is_signed_v<T> ? it->value.IsInt64() : it->value.IsUint64();
  if (!fits) return Invalid(context, absl::StrCat(name, " must be an integer"));
  *out = std::is_signed_v<T> ? static_cast<T>(it->value.GetInt64())
                             : static_cast<T>(it->value.GetUint64());
  return absl::OkStatus();
}

// A LinuxResources object (config.json's linux.resources, or update's).
absl::Status ResourcesFrom(const rapidjson::Value& res, absl::string_view context,
                           Resources* r) {
  auto group = [&](const char* name) -> const rapidjson::Value* {
    auto it = res.FindMember(name);
    return it != res.MemberEnd() && it->value.IsObject() ? &it->value : nullptr;
  };
  if (const rapidjson::Value* m = group("memory")) {
    RETURN_IF_ERROR(Number(*m, "limit", absl::StrCat(context, ".memory"), &r->memory_limit));
  }
  if (const rapidjson::Value* c = group("cpu")) {
    std::string cpu = absl::StrCat(context, ".cpu");
    for (absl::Status s : {Number(*c, "shares", cpu, &r->cpu_shares),
                           Number(*c, "quota", cpu, &r->cpu_quota),
                           Number(*c, "period", cpu, &r->cpu_period)}) {
      if (!s.ok()) return s;
    }
    for (auto [field, out] : {std::pair{"cpus", &r->cpuset_cpus}, {"mems", &r->cpuset_mems}}) {
      auto it = c->FindMember(field);
      if (it != c->MemberEnd() && it->value.IsString()) *out = it->value.GetString();
    }
  }
  if (const rapidjson::Value* p = group("pids")) {
    RETURN_IF_ERROR(Number(*p, "limit", absl::StrCat(context, ".pids"), &r->pids_limit));
  }
  return absl::OkStatus();
}

absl::Status LinuxFrom(const rapidjson::Value& linux, BundleSpec* spec) {
  if (!linux.IsObject()) return Invalid("config.json", "linux must be an object");
  auto path = linux.FindMember("cgroupsPath");
  if (path != linux.MemberEnd() && !path->value.IsNull()) {
    if (!path->value.IsString()) {
      return Invalid("config.json", "linux.cgroupsPath must be a string");
    }
    spec->cgroups_path = path->value.GetString();
  }
  auto namespaces = linux.FindMember("namespaces");
  if (namespaces != linux.MemberEnd() && !namespaces->value.IsNull()) {
    if (!namespaces->value.IsArray()) {
      return Invalid("config.json", "linux.namespaces must be an array");
    }
    for (const auto& ns : namespaces->value.GetArray()) {
      auto type = ns.IsObject() ? ns.FindMember("type") : ns.MemberEnd();
      if (!ns.IsObject() || type == ns.MemberEnd() || !type->value.IsString()) {
        return Invalid("config.json", "linux.namespaces[] must be objects with a type");
      }
      if (std::string(type->value.GetString()) != "network") continue;
      auto path = ns.FindMember("path");
      spec->network_namespace =
          path != ns.MemberEnd() && path->value.IsString() ? path->value.GetString() : "";
    }
  }
  auto res = linux.FindMember("resources");
  if (res == linux.MemberEnd() || !res->value.IsObject()) return absl::OkStatus();
  return ResourcesFrom(res->value, "config.json: linux.resources", &spec->resources);
}

absl::Status HookList(const rapidjson::Value& hooks, const char* name, std::vector<Hook>* out) {
  constexpr absl::string_view kCtx = "config.json: hooks";
  auto it = hooks.FindMember(name);
  if (it == hooks.MemberEnd() || it->value.IsNull()) return absl::OkStatus();
  if (!it->value.IsArray()) return Invalid(kCtx, absl::StrCat(name, " must be an array"));
  for (const auto& h : it->value.GetArray()) {
    std::string at = absl::StrCat(name, "[", out->size(), "]");
    if (!h.IsObject()) return Invalid(kCtx, at + " must be an object");
    Hook hook;
    auto path = h.FindMember("path");
    if (path == h.MemberEnd() || !path->value.IsString() || path->value.GetString()[0] != '/') {
      return Invalid(kCtx, at + ".path must be an absolute path");
    }
    hook.path = path->value.GetString();
    std::string ctx = absl::StrCat(kCtx, ".", at);
    if (auto s = Strings(h, "args", ctx, &hook.args); !s.ok()) return s;
    if (auto s = Strings(h, "env", ctx, &hook.env); !s.ok()) return s;
    auto timeout = h.FindMember("timeout");
    if (timeout != h.MemberEnd() && !timeout->value.IsNull()) {
      if (!timeout->value.IsInt() || timeout->value.GetInt() <= 0) {
        return Invalid(kCtx, at + ".timeout must be a positive number of seconds");
      }
      hook.timeout_s = timeout->value.GetInt();
    }
    out->push_back(std::move(hook));
  }
  return absl::OkStatus();
}

}  // namespace

int CapabilityNumber(absl::string_view name) {
  // linux/capability.h, in number order.
  static constexpr const char* kNames[] = {
      "CAP_CHOWN",           "CAP_DAC_OVERRIDE",   "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
      "CAP_FSETID",          "CAP_KILL",           "CAP_SETGID",          "CAP_SETUID",
      "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
      "CAP_NET_ADMIN",       "CAP_NET_RAW",        "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
      "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",      "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
      "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",      "CAP_SYS_BOOT",        "CAP_SYS_NICE",
      "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",       "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
      "CAP_LEASE",           "CAP_AUDIT_WRITE",    "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
      "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",      "CAP_SYSLOG",          "CAP_WAKE_ALARM",
      "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",     "CAP_PERFMON",         "CAP_BPF",
      "CAP_CHECKPOINT_RESTORE"};
  for (int i = 0; i < static_cast<int>(std::size(kNames)); ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

absl::StatusOr<Hooks> ParseHooks(absl::string_view json) {
  rapidjson::Document doc;
  if (auto s = ParseJsonObject(json, &doc); !s.ok()) {
    return Invalid("config.json: hooks", s.message());
  }
  Hooks h;
  for (auto [name, list] : {std::pair{"prestart", &h.prestart},
                            {"createRuntime", &h.create_runtime},
                            {"createContainer", &h.create_container},
                            {"startContainer", &h.start_container},
                            {"poststart", &h.poststart},
                            {"poststop", &h.poststop}}) {
    if (auto s = HookList(doc, name, list); !s.ok()) return s;
  }
  return h;
}

absl::StatusOr<ProcessSpec> ParseProcess(absl::string_view json, absl::string_view context) {
  rapidjson::Document doc;
  if (auto s = ParseJsonObject(json, &doc); !s.ok()) {
    return Invalid(context, s.message());
  }
  return ProcessFrom(doc, context);
}

absl::StatusOr<BundleSpec> ParseBundleConfig(absl::string_view json, const std::string& bundle) {
  rapidjson::Document doc;
  if (auto s = ParseJsonObject(json, &doc); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", s.message()));
  }
  BundleSpec spec;
  auto version = doc.FindMember("ociVersion");
  if (version != doc.MemberEnd() && version->value.IsString()) {
    spec.oci_version = version->value.GetString();
  }
  auto process = doc.FindMember("process");
  if (process == doc.MemberEnd()) return Invalid("config.json", "process property must not be empty");
  auto p = ProcessFrom(process->value, "config.json: process");
  if (!p.ok()) return p.status();
  spec.process = std::move(*p);
  auto root = doc.FindMember("root");
  if (root == doc.MemberEnd() || !root->value.IsObject() || !root->value.HasMember("path") ||
      !root->value["path"].IsString() || root->value["path"].GetStringLength() == 0) {
    return Invalid("config.json", "root.path must be set");
  }
  std::string path = root->value["path"].GetString();
  spec.root_path = path[0] == '/' ? path : bundle + "/" + path;
  if (root->value.HasMember("readonly") && root->value["readonly"].IsBool()) {
    spec.root_readonly = root->value["readonly"].GetBool();
  }
  auto hostname = doc.FindMember("hostname");
  if (hostname != doc.MemberEnd() && hostname->value.IsString()) {
    spec.hostname = hostname->value.GetString();
    if (spec.hostname.size() > 64) return Invalid("config.json", "hostname is over 64 bytes");
  }
  auto linux = doc.FindMember("linux");
  if (linux != doc.MemberEnd() && !linux->value.IsNull()) {
    if (auto s = LinuxFrom(linux->value, &spec); !s.ok()) return s;
  }
  auto mounts = doc.FindMember("mounts");
  if (mounts != doc.MemberEnd() && !mounts->value.IsNull()) {
    if (!mounts->value.IsArray()) return Invalid("config.json", "mounts must be an array");
    for (const auto& m : mounts->value.GetArray()) {
      if (!m.IsObject()) return Invalid("config.json", "mounts must hold objects");
      MountEntry entry;
      for (auto [field, out] : {std::pair{"destination", &entry.destination},
                                {"type", &entry.type}, {"source", &entry.source}}) {
        auto it = m.FindMember(field);
        if (it == m.MemberEnd()) continue;
        if (!it->value.IsString()) {
          return Invalid("config.json", absl::StrCat("mounts[].", field, " must be a string"));
        }
        *out = it->value.GetString();
      }
      if (entry.destination.empty()) {
        return Invalid("config.json", "mounts[].destination must be set");
      }
      if (auto s = Strings(m, "options", "config.json: mounts[]", &entry.options); !s.ok()) {
        return s;
      }
      spec.mounts.push_back(std::move(entry));
    }
  }
  auto hooks = doc.FindMember("hooks");
  if (hooks != doc.MemberEnd() && !hooks->value.IsNull()) {
    rapidjson::StringBuffer text;
    rapidjson::Writer<rapidjson::StringBuffer> w(text);
    hooks->value.Accept(w);
    spec.hooks_json = text.GetString();
    if (auto h = ParseHooks(spec.hooks_json); !h.ok()) return h.status();
  }
  auto annotations = doc.FindMember("annotations");
  if (annotations != doc.MemberEnd() && annotations->value.IsObject()) {
    for (const auto& m : annotations->value.GetObject()) {
      if (m.value.IsString()) spec.annotations[m.name.GetString()] = m.value.GetString();
    }
  }
  absl::Status status;
  if (!ParseAnnotationUint(spec.annotations, "io.ember.vcpus", 1, VmSize::kMaxVcpus,
                           &spec.vm.vcpus, &status) ||
      !ParseAnnotationUint(spec.annotations, "io.ember.mem_mib", VmSize::kMinMemMib,
                           VmSize::kMaxMemMib, &spec.vm.mem_mib,
                           &status)) {
    return status;
  }
  return spec;
}

absl::StatusOr<Resources> ParseResources(absl::string_view json) {
  rapidjson::Document doc;
  if (auto s = ParseJsonObject(json, &doc); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("resources: ", s.message()));
  }
  Resources r;
  RETURN_IF_ERROR(ResourcesFrom(doc, "resources", &r));
  return r;
}

absl::StatusOr<BundleSpec> LoadBundle(const std::string& bundle) {
  std::ifstream in(bundle + "/config.json");
  if (!in) return absl::NotFoundError("JSON specification file config.json not found");
  std::stringstream text;
  text << in.rdbuf();
  auto spec = ParseBundleConfig(text.str(), bundle);
  if (!spec.ok()) return spec.status();
  struct stat st;
  if (stat(spec->root_path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("invalid rootfs: stat ", spec->root_path, ": ", strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid rootfs: ", spec->root_path, ": not a directory"));
  }
  return spec;
}

}  // namespace ember::oci
