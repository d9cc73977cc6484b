#include "src/oci/cgroups.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "src/common/status_macros.h"

namespace ember::oci {

const std::vector<std::string>& ContainerControllers() {
  static const std::vector<std::string> controllers = {
      "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "hugetlb"};
  return controllers;
}

absl::StatusOr<std::string> SystemdCgroupPath(const std::string& cgroups_path) {
  std::vector<std::string> parts = absl::StrSplit(cgroups_path, ':');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "linux.cgroupsPath '", cgroups_path, "': ", why,
        " (the systemd form is slice:prefix:name, e.g. "
        "kubepods-besteffort-pod1.slice:cri-containerd:abc)"));
  };
  if (parts.size() != 3 || parts[2].empty()) return bad("not three parts with a name");
  std::string slice = parts[0].empty() ? "system.slice" : parts[0];
  if (!absl::EndsWith(slice, ".slice") || slice.find('/') != std::string::npos) {
    return bad("the slice must be a unit ending in .slice");
  }
  // systemd's nesting: a-b-c.slice is a.slice/a-b.slice/a-b-c.slice, and
  // -.slice the root.
  std::string path;
  std::string name = slice.substr(0, slice.size() - 6);
  if (name != "-") {
    if (name.empty() || name.front() == '-' || name.back() == '-' ||
        name.find("--") != std::string::npos) {
      return bad("a slice name with an empty part");
    }
    for (size_t dash = name.find('-');; dash = name.find('-', dash + 1)) {
      absl::StrAppend(&path, path.empty() ? "" : "/",
                      name.substr(0, dash == std::string::npos ? name.size() : dash), ".slice");
      if (dash == std::string::npos) break;
    }
  }
  const std::string& unit_name = parts[2];
  if (unit_name.find('/') != std::string::npos) return bad("a name with a '/'");
  // A name that is a slice is the unit itself (runc's rule); else a scope.
  std::string unit = absl::EndsWith(unit_name, ".slice")
                         ? unit_name
                         : absl::StrCat(parts[1], "-", unit_name, ".scope");
  return absl::StrCat(path, path.empty() ? "" : "/", unit);
}

absl::StatusOr<jail::CgroupPlacement> PlanCgroup(const std::string& cgroups_path,
                                                 const Resources& r, int version) {
  std::string relative(absl::StripPrefix(cgroups_path, "/"));
  if (cgroups_path.find(':') != std::string::npos) {
    ASSIGN_OR_RETURN(relative, SystemdCgroupPath(cgroups_path));
  }
  bool bad = relative.empty();
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    bad |= part.empty() || part == "." || part == "..";
  }
  if (bad) {
    return absl::InvalidArgumentError(absl::StrCat(
        "linux.cgroupsPath '", cgroups_path, "' must name a cgroup: no '.', '..' or '//'"));
  }
  jail::CgroupPlacement p;
  p.version = version;
  p.relative = relative;
  p.also_join = ContainerControllers();
  auto set = [&](const char* controller, const char* file, std::string value) {
    p.settings.push_back({controller, file, std::move(value)});
  };
  bool v1 = version == 1;
  // -1 is "unlimited" (runc's), which `update` may set over a limit.
  auto limit = [&](int64_t v) { return v > 0 ? absl::StrCat(v) : v1 ? "-1" : "max"; };
  if (r.memory_limit && (*r.memory_limit > 0 || *r.memory_limit == -1)) {
    set("memory", v1 ? "memory.limit_in_bytes" : "memory.max", limit(*r.memory_limit));
  }
  if (r.cpu_shares && *r.cpu_shares > 0) {
    if (v1) {
      set("cpu", "cpu.shares", absl::StrCat(*r.cpu_shares));
    } else {
      // runc's conversion of shares (2-262144) to a weight (1-10000).
      uint64_t shares = std::min<uint64_t>(std::max<uint64_t>(*r.cpu_shares, 2), 262144);
      set("cpu", "cpu.weight", absl::StrCat(1 + ((shares - 2) * 9999) / 262142));
    }
  }
  bool quota = r.cpu_quota && (*r.cpu_quota > 0 || *r.cpu_quota == -1);
  if (v1) {
    // The period first: a quota is checked against it.
    if (r.cpu_period && *r.cpu_period > 0) {
      set("cpu", "cpu.cfs_period_us", absl::StrCat(*r.cpu_period));
    }
    if (quota) set("cpu", "cpu.cfs_quota_us", absl::StrCat(*r.cpu_quota));
  } else if (quota || (r.cpu_period && *r.cpu_period > 0)) {
    set("cpu", "cpu.max",
        absl::StrCat(quota && *r.cpu_quota > 0 ? absl::StrCat(*r.cpu_quota) : "max", " ",
                     r.cpu_period && *r.cpu_period > 0 ? *r.cpu_period : 100000));
  }
  if (r.pids_limit && (*r.pids_limit > 0 || *r.pids_limit == -1)) {
    set("pids", "pids.max", *r.pids_limit > 0 ? absl::StrCat(*r.pids_limit) : "max");
  }
  if (!r.cpuset_cpus.empty()) set("cpuset", "cpuset.cpus", r.cpuset_cpus);
  if (!r.cpuset_mems.empty()) set("cpuset", "cpuset.mems", r.cpuset_mems);
  return p;
}

}  // namespace ember::oci
