#include "src/oci/mounts.h"

#include <ftw.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "src/oci/vm.h"

namespace ember::oci {
namespace {

// Kernel file systems the guest can make itself.
const std::set<std::string> kGuestTypes = {"tmpfs", "ramfs",  "proc",   "sysfs",
                                           "devpts", "mqueue", "cgroup", "cgroup2"};

// runc's option words that are mount flags: set or clear.
struct FlagWord {
  const char* word;
  bool clear;
  uint32_t flag;
};
constexpr FlagWord kFlagWords[] = {
    {"ro", false, MS_RDONLY},         {"rw", true, MS_RDONLY},
    {"nosuid", false, MS_NOSUID},     {"suid", true, MS_NOSUID},
    {"nodev", false, MS_NODEV},       {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},     {"exec", true, MS_NOEXEC},
    {"sync", false, MS_SYNCHRONOUS},  {"async", true, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},   {"noatime", false, MS_NOATIME},
    {"atime", true, MS_NOATIME},      {"nodiratime", false, MS_NODIRATIME},
    {"diratime", true, MS_NODIRATIME}, {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME}, {"strictatime", false, MS_STRICTATIME},
    {"nostrictatime", true, MS_STRICTATIME}, {"bind", false, MS_BIND},
    {"rbind", false, MS_BIND | MS_REC},
};
// Words that change nothing in a guest of one container: propagation
// (there is no other mount namespace) and the defaults.
const std::set<std::string> kIgnoredWords = {
    "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
    "runbindable", "defaults", "mand", "nomand", "remount"};

void ParseOptions(const std::vector<std::string>& options, uint32_t* flags, std::string* data) {
  std::vector<std::string> rest;
  for (const std::string& o : options) {
    bool known = false;
    for (const FlagWord& f : kFlagWords) {
      if (o != f.word) continue;
      *flags = f.clear ? *flags & ~f.flag : *flags | f.flag;
      known = true;
    }
    if (!known && !kIgnoredWords.count(o)) rest.push_back(o);
  }
  *data = absl::StrJoin(rest, ",");
}

// "/a/./b/" as "/a/b"; empty when a component is "..".
std::string CleanPath(const std::string& path) {
  std::vector<std::string> parts;
  for (absl::string_view p : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (p == ".") continue;
    if (p == "..") return "";
    parts.emplace_back(p);
  }
  return "/" + absl::StrJoin(parts, "/");
}

// Whether `path` is `top` or under it.
bool Within(const std::string& path, const std::string& top) {
  return path == top || absl::StartsWith(path, top + "/");
}

// The parents of `path` and, with `self`, the path, top down.
void AddDirectories(const std::string& path, bool self, std::vector<std::string>* out) {
  for (size_t pos = 1; pos < path.size(); ++pos) {
    if (path[pos] == '/') out->push_back(path.substr(0, pos));
  }
  if (self && path != "/") out->push_back(path);
}

// debugfs takes arguments split at white space, and quotes; names holding
// those are refused rather than mangled.
bool DebugfsSafe(const std::string& path) {
  return path.find_first_of(" \t\n\r\"'\\") == std::string::npos;
}

// The debugfs commands that copy one host tree (or file) to `destination`.
struct CopyScript {
  std::string commands;
  std::string error;
};
CopyScript* g_script = nullptr;
std::string g_source, g_destination;

void SetOwner(CopyScript* script, const std::string& at, const struct stat& st) {
  absl::StrAppend(&script->commands, "sif ", at, " uid ", st.st_uid, "\n", "sif ", at, " gid ",
                  st.st_gid, "\n");
}

int AddCopyEntry(const char* path, const struct stat* st, int kind, FTW*) {
  CopyScript* script = g_script;
  std::string at = g_destination + std::string(path).substr(g_source.size());
  if (!DebugfsSafe(path) || !DebugfsSafe(at)) {
    script->error = absl::StrCat(path, ": a name with white space, a quote or a backslash");
    return 1;
  }
  if (kind == FTW_D) {
    absl::StrAppend(&script->commands, "mkdir ", at, "\n", "sif ", at, " mode ",
                    absl::StrFormat("0%o", S_IFDIR | (st->st_mode & 07777)), "\n");
  } else if (kind == FTW_F && S_ISREG(st->st_mode)) {
    absl::StrAppend(&script->commands, "rm ", at, "\n", "write ", path, " ", at, "\n");
  } else if (kind == FTW_SL) {
    char target[4096];
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n < 0) {
      script->error = absl::StrCat(path, ": ", strerror(errno));
      return 1;
    }
    std::string link(target, n);
    if (!DebugfsSafe(link)) {
      script->error = absl::StrCat(path, ": a link to a name debugfs cannot take");
      return 1;
    }
    absl::StrAppend(&script->commands, "rm ", at, "\n", "symlink ", at, " ", link, "\n");
  } else {
    script->error = absl::StrCat(path, ": not a file, directory or symbolic link (",
                                 kind == FTW_DNR || kind == FTW_NS ? "unreadable" : "special",
                                 ")");
    return 1;
  }
  SetOwner(script, at, *st);
  return 0;
}

uint64_t g_bytes = 0;
int AddBytes(const char*, const struct stat* st, int, FTW*) {
  g_bytes += (static_cast<uint64_t>(st->st_size) + 4095) / 4096 * 4096 + 4096;
  return 0;
}

}  // namespace

absl::StatusOr<MountPlan> PlanMounts(const std::vector<MountEntry>& mounts) {
  MountPlan plan;
  for (const MountEntry& m : mounts) {
    std::string where = absl::StrCat("mount at ", m.destination);
    std::string dest = CleanPath(m.destination);
    if (dest.empty()) return absl::InvalidArgumentError(where + ": '..' in the destination");
    // The agent's standard set: the guest's /proc, /sys and /dev.
    if (Within(dest, "/proc") || Within(dest, "/sys") || Within(dest, "/dev")) continue;
    if (dest == "/") return absl::InvalidArgumentError(where + ": the root is root.path");
    uint32_t flags = 0;
    std::string data;
    ParseOptions(m.options, &flags, &data);
    if (m.type == "bind" || (flags & MS_BIND)) {
      struct stat st;
      if (m.source.empty() || m.source[0] != '/' || stat(m.source.c_str(), &st) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": bind source '", m.source, "': ",
            m.source.empty() || m.source[0] != '/' ? "not an absolute path" : strerror(errno)));
      }
      if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": bind source ", m.source,
            " is not a file or directory; a microVM gets a copy of what is bound"));
      }
      if (!DebugfsSafe(dest)) {
        return absl::InvalidArgumentError(where + ": white space or quotes in the destination");
      }
      plan.copies.push_back({m.source, dest});
      AddDirectories(dest, S_ISDIR(st.st_mode), &plan.directories);
      // Flags beyond the bind itself take a bind onto the copy in the guest.
      if (flags & ~(MS_BIND | MS_REC)) {
        plan.guest.push_back({"", dest, dest, flags | MS_BIND, ""});
      }
      continue;
    }
    if (!kGuestTypes.count(m.type)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": type '", m.type, "' from '", m.source,
          "' cannot reach a microVM (Ember mounts kernel file systems in the guest and copies "
          "bind mounts into the container's image)"));
    }
    if (!DebugfsSafe(dest)) {
      return absl::InvalidArgumentError(where + ": white space or quotes in the destination");
    }
    plan.guest.push_back({m.type, m.source.empty() ? m.type : m.source, dest, flags, data});
    AddDirectories(dest, true, &plan.directories);
  }
  return plan;
}

uint64_t CopiesBytes(const MountPlan& plan) {
  g_bytes = 0;
  for (const MountPlan::Copy& c : plan.copies) nftw(c.source.c_str(), AddBytes, 64, FTW_PHYS);
  return g_bytes;
}

absl::Status ApplyToImage(const MountPlan& plan, const std::string& image) {
  if (plan.directories.empty() && plan.copies.empty()) return absl::OkStatus();
  CopyScript script;
  for (const std::string& d : plan.directories) absl::StrAppend(&script.commands, "mkdir ", d, "\n");
  for (const MountPlan::Copy& c : plan.copies) {
    g_script = &script;
    g_source = c.source;
    g_destination = c.destination;
    // Not FTW_PHYS at the top: a bind follows a symbolic link it is given.
    struct stat top;
    if (stat(c.source.c_str(), &top) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(c.source, ": ", strerror(errno)));
    }
    if (S_ISREG(top.st_mode)) {
      AddCopyEntry(c.source.c_str(), &top, FTW_F, nullptr);
    } else {
      nftw(c.source.c_str(), AddCopyEntry, 64, FTW_PHYS);
    }
    g_script = nullptr;
    if (!script.error.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bind mount at ", c.destination, ": cannot copy ", script.error));
    }
  }
  std::string commands_file = image + ".mounts";
  {
    std::ofstream out(commands_file);
    out << script.commands;
    if (!out.flush()) return absl::InternalError("cannot write " + commands_file);
  }
  std::string output;
  absl::Status s = RunTool({"debugfs", "-w", "-f", commands_file, image}, &output);
  unlink(commands_file.c_str());
  if (!s.ok()) return s;
  // debugfs exits 0 whatever its commands did: what it printed tells. A
  // directory that exists and a file not there to remove are expected.
  std::vector<std::string> problems;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "debugfs") || absl::StrContains(line, "directory already exists") ||
        absl::StartsWith(line, "rm: File not found") || absl::StartsWith(line, "Allocated inode")) {
      continue;
    }
    problems.emplace_back(line);
  }
  if (!problems.empty()) {
    return absl::InternalError(absl::StrCat("copying bind mounts into the container's image: ",
                                            absl::StrJoin(problems, "; ")));
  }
  return absl::OkStatus();
}

}  // namespace ember::oci
