// What ember-oci reads from an OCI bundle (config.json, runtime spec 1.0)
// and from `exec --process` (a process object): only the fields a process
// in a microVM uses. Unknown fields are ignored, as runc ignores them:
// containerd's specs carry Linux settings (namespaces, cgroups, seccomp,
// capabilities) that the microVM's boundary replaces.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ember::oci {

struct ProcessSpec {
  bool terminal = false;
  std::vector<std::string> args;  // at least one
  std::vector<std::string> env;   // "NAME=VALUE"
  std::string cwd = "/";          // absolute
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additional_gids;
  // process.capabilities as masks (bit N: capability N); without the
  // object the process keeps what the agent has.
  bool has_capabilities = false;
  uint64_t cap_bounding = 0, cap_effective = 0, cap_permitted = 0, cap_inheritable = 0,
           cap_ambient = 0;
  bool no_new_privileges = false;
  // process.rlimits, by Linux's number (RLIMIT_NOFILE is 7).
  struct Rlimit {
    uint32_t resource = 0;
    uint64_t soft = 0, hard = 0;
  };
  std::vector<Rlimit> rlimits;
  // The host's OOM killer's preference for the microVM (the monitor and
  // the VMM take it): what kubelet sets per QoS class.
  std::optional<int> oom_score_adj;
};

// Linux's number for a capability name ("CAP_NET_RAW" is 13), or -1.
int CapabilityNumber(absl::string_view name);

// The microVM's size, from the annotations "io.ember.vcpus" and
// "io.ember.mem_mib" (defaults below).
struct VmSize {
  static constexpr uint32_t kDefaultVcpus = 1;
  static constexpr uint32_t kDefaultMemMib = 128;
  static constexpr uint32_t kMaxVcpus = 32;
  static constexpr uint32_t kMinMemMib = 64;
  static constexpr uint32_t kMaxMemMib = 1 << 20;
  uint32_t vcpus = kDefaultVcpus;
  uint32_t mem_mib = kDefaultMemMib;
};

// One entry of config.json's "mounts" (mounts.h says what becomes of it).
struct MountEntry {
  std::string destination;
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

// linux.resources, the parts Ember applies (cgroups.h).
struct Resources {
  std::optional<int64_t> memory_limit;  // bytes; -1: none
  std::optional<uint64_t> cpu_shares;
  std::optional<int64_t> cpu_quota;  // us per period; -1: none
  std::optional<uint64_t> cpu_period;
  std::optional<int64_t> pids_limit;  // <= 0: none
  std::string cpuset_cpus, cpuset_mems;
};

struct BundleSpec {
  std::string oci_version;
  ProcessSpec process;
  std::string root_path;  // absolute: a relative root.path is under the bundle
  bool root_readonly = false;
  std::string hostname;
  std::map<std::string, std::string> annotations;
  VmSize vm;
  std::vector<MountEntry> mounts;
  std::string hooks_json = "{}";  // config.json's hooks, checked (hooks.h)
  std::string cgroups_path;  // linux.cgroupsPath; empty: none
  // linux.namespaces' network entry: its path, "" for a new namespace;
  // nullopt without the entry (the host's).
  std::optional<std::string> network_namespace;
  Resources resources;
};

// Parses a process object ("process" of config.json, or exec's file).
// `context` names it in errors ("process").
absl::StatusOr<ProcessSpec> ParseProcess(absl::string_view json, absl::string_view context);

// Parses config.json's text; `bundle` resolves a relative root.path.
absl::StatusOr<BundleSpec> ParseBundleConfig(absl::string_view json, const std::string& bundle);

// Parses a LinuxResources object on its own (`update --resources`).
absl::StatusOr<Resources> ParseResources(absl::string_view json);

// Reads <bundle>/config.json and checks that its root exists, with runc's
// messages: "JSON specification file config.json not found", "invalid
// rootfs: stat <path>: no such file or directory".
absl::StatusOr<BundleSpec> LoadBundle(const std::string& bundle);

}  // namespace ember::oci
