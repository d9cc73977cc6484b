#include "src/jail/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"

namespace ember::jail {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Status WriteFile(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("cgroup file ", path));
  ssize_t n = write(fd, value.data(), value.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return ErrnoStatus(absl::StrCat("writing '", value, "' to ", path), n < 0 ? err : EIO);
  }
  return absl::OkStatus();
}

// mkdir -p below `mount`, one level at a time; `each` runs on every level
// this call creates (cpuset needs its parent's cpus and mems copied).
absl::Status MakeCgroupPath(const std::string& mount, const std::string& relative,
                            const std::function<absl::Status(const std::string&,
                                                             const std::string&)>& each) {
  std::string path = mount;
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    std::string parent = path;
    absl::StrAppend(&path, "/", part);
    if (mkdir(path.c_str(), 0755) == 0) {
      RETURN_IF_ERROR(each(parent, path));
    } else if (errno != EEXIST) {
      return ErrnoStatus(absl::StrCat("creating cgroup ", path));
    }
  }
  return absl::OkStatus();
}

absl::Status JoinV1(const CgroupPlacement& p, absl::string_view mounts, pid_t pid) {
  // Controller -> its settings, in the order given.
  std::map<std::string, std::vector<const CgroupSetting*>> by_controller;
  for (const CgroupSetting& s : p.settings) by_controller[s.controller].push_back(&s);
  for (const std::string& c : p.also_join) {
    if (FindCgroupMount(mounts, 1, c)) by_controller[c];  // joined, nothing written
  }
  const std::string& relative = p.relative;
  for (const auto& [controller, settings] : by_controller) {
    std::optional<std::string> mount = FindCgroupMount(mounts, 1, controller);
    if (!mount) {
      return absl::NotFoundError(
          absl::StrCat("no cgroup v1 hierarchy has the '", controller, "' controller"));
    }
    // clang 14 cannot capture a structured binding: a plain bool instead.
    const bool cpuset = controller == "cpuset";
    RETURN_IF_ERROR(MakeCgroupPath(
        *mount, relative, [&](const std::string& parent, const std::string& path) {
          if (!cpuset) return absl::OkStatus();
          // A new cpuset has no CPUs or memory nodes: inherit the parent's.
          for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
            ASSIGN_OR_RETURN(std::string v, ReadFile(parent + "/" + file));
            RETURN_IF_ERROR(WriteFile(path + "/" + file, std::string(absl::StripTrailingAsciiWhitespace(v))));
          }
          return absl::OkStatus();
        }));
    const std::string dir = absl::StrCat(*mount, "/", relative);
    for (const CgroupSetting* s : settings) RETURN_IF_ERROR(WriteFile(dir + "/" + s->file, s->value));
    RETURN_IF_ERROR(WriteFile(dir + "/cgroup.procs", std::to_string(pid)));
  }
  return absl::OkStatus();
}

absl::Status JoinV2(const CgroupPlacement& p, absl::string_view mounts, pid_t pid) {
  std::optional<std::string> mount = FindCgroupMount(mounts, 2, "");
  if (!mount) return absl::NotFoundError("no cgroup v2 (cgroup2) file system is mounted");
  // Core files (cgroup.*) need no controller; the others need theirs
  // enabled in every ancestor's cgroup.subtree_control.
  std::set<std::string> controllers;
  for (const CgroupSetting& s : p.settings) {
    if (s.controller != "cgroup") controllers.insert(s.controller);
  }
  ASSIGN_OR_RETURN(std::string available, ReadFile(*mount + "/cgroup.controllers"));
  std::set<std::string> have;
  for (absl::string_view c : absl::StrSplit(available, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    have.insert(std::string(c));
  }
  for (const std::string& c : p.also_join) {
    if (have.count(c)) controllers.insert(c);
  }
  std::string enable;
  for (const std::string& c : controllers) {
    if (!have.count(c)) {
      return absl::NotFoundError(absl::StrCat(
          "the cgroup v2 hierarchy at ", *mount, " has no '", c,
          "' controller (it may be bound to a v1 hierarchy: try --cgroup-version 1)"));
    }
    absl::StrAppend(&enable, enable.empty() ? "" : " ", "+", c);
  }
  const std::string& relative = p.relative;
  RETURN_IF_ERROR(MakeCgroupPath(*mount, relative,
                                 [](const std::string&, const std::string&) { return absl::OkStatus(); }));
  if (!enable.empty()) {
    // The mount and every level down to the parent of the process's cgroup.
    std::string path = *mount;
    RETURN_IF_ERROR(WriteFile(path + "/cgroup.subtree_control", enable));
    std::vector<absl::string_view> parts = absl::StrSplit(relative, '/');
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      absl::StrAppend(&path, "/", parts[i]);
      RETURN_IF_ERROR(WriteFile(path + "/cgroup.subtree_control", enable));
    }
  }
  const std::string dir = absl::StrCat(*mount, "/", relative);
  for (const CgroupSetting& s : p.settings) RETURN_IF_ERROR(WriteFile(dir + "/" + s.file, s.value));
  return WriteFile(dir + "/cgroup.procs", std::to_string(pid));
}

// As Firecracker's jailer: with cgroup v2 and no settings, the process
// joins an existing parent cgroup (one a runtime made and configured for
// its VMs); a missing one is not made.
absl::Status JoinV2Parent(const JailerArgs& args, absl::string_view mounts, pid_t pid) {
  std::optional<std::string> mount = FindCgroupMount(mounts, 2, "");
  if (!mount) return absl::OkStatus();
  const std::string dir = absl::StrCat(*mount, "/", args.parent_cgroup);
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return absl::OkStatus();
  return WriteFile(dir + "/cgroup.procs", std::to_string(pid));
}

}  // namespace

std::optional<std::string> FindCgroupMount(absl::string_view mounts, int version,
                                           absl::string_view controller) {
  for (absl::string_view line : absl::StrSplit(mounts, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 4) continue;
    if (version == 2 && f[2] == "cgroup2") return std::string(f[1]);
    if (version == 1 && f[2] == "cgroup") {
      for (absl::string_view opt : absl::StrSplit(f[3], ',')) {
        if (opt == controller) return std::string(f[1]);
      }
    }
  }
  return std::nullopt;
}

absl::Status JoinCgroup(const CgroupPlacement& placement, pid_t pid) {
  ASSIGN_OR_RETURN(std::string mounts, ReadFile("/proc/mounts"));
  return placement.version == 1 ? JoinV1(placement, mounts, pid) : JoinV2(placement, mounts, pid);
}

int HostCgroupVersion() {
  absl::StatusOr<std::string> mounts = ReadFile("/proc/mounts");
  if (!mounts.ok()) return 0;
  if (FindCgroupMount(*mounts, 1, "memory") || FindCgroupMount(*mounts, 1, "cpu")) return 1;
  return FindCgroupMount(*mounts, 2, "") ? 2 : 0;
}

absl::Status UpdateCgroup(const CgroupPlacement& placement) {
  ASSIGN_OR_RETURN(std::string mounts, ReadFile("/proc/mounts"));
  for (const CgroupSetting& s : placement.settings) {
    std::optional<std::string> mount =
        FindCgroupMount(mounts, placement.version, placement.version == 1 ? s.controller : "");
    if (!mount) {
      return absl::NotFoundError(absl::StrCat("no cgroup hierarchy has the '", s.controller,
                                              "' controller"));
    }
    RETURN_IF_ERROR(WriteFile(absl::StrCat(*mount, "/", placement.relative, "/", s.file), s.value));
  }
  return absl::OkStatus();
}

void LeaveCgroup(int version, const std::string& relative,
                 const std::vector<std::string>& controllers) {
  absl::StatusOr<std::string> mounts = ReadFile("/proc/mounts");
  if (!mounts.ok()) return;
  std::set<std::string> dirs;
  if (version == 2) {
    if (auto m = FindCgroupMount(*mounts, 2, "")) dirs.insert(*m + "/" + relative);
  } else {
    for (const std::string& c : controllers) {
      if (auto m = FindCgroupMount(*mounts, 1, c)) dirs.insert(*m + "/" + relative);
    }
  }
  // A process killed just before may still be leaving (freeing a guest's
  // memory takes a moment): EBUSY until it has.
  for (const std::string& d : dirs) {
    for (int i = 0; i < 200 && rmdir(d.c_str()) != 0 && errno == EBUSY; ++i) usleep(10 * 1000);
  }
}

absl::Status JoinCgroups(const JailerArgs& args, pid_t pid) {
  if (args.cgroups.empty() && args.cgroup_version == 1) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string mounts, ReadFile("/proc/mounts"));
  if (args.cgroups.empty()) return JoinV2Parent(args, mounts, pid);
  CgroupPlacement p{args.cgroup_version, absl::StrCat(args.parent_cgroup, "/", args.id),
                    args.cgroups, {}};
  return p.version == 1 ? JoinV1(p, mounts, pid) : JoinV2(p, mounts, pid);
}

}  // namespace ember::jail
