#include "src/oci/mounts.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
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

// Pseudo file systems whose files are not data to copy (reading one may
// block, or hand the container what the host keeps to itself).
constexpr long kRefusedFileSystems[] = {PROC_SUPER_MAGIC, SYSFS_MAGIC,        DEBUGFS_MAGIC,
                                        TRACEFS_MAGIC,    CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC,
                                        DEVPTS_SUPER_MAGIC, SECURITYFS_MAGIC, BPF_FS_MAGIC};

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

// debugfs takes arguments split at white space, and quotes; names holding
// those are refused rather than mangled.
bool DebugfsSafe(absl::string_view name) {
  return name.find_first_of(" \t\n\r\"'\\") == absl::string_view::npos;
}

// One staged entry: what debugfs makes at `at` in the image.
struct Entry {
  std::string at;
  std::string staged;  // regular files: the copy to write
  std::string link;    // symbolic links: the target
  struct stat st;
};

// Copies the entry `name` of the directory `parent_fd` (the host's, opened
// without following links) to `staged`, and below it, recording each.
absl::Status Stage(int parent_fd, const std::string& name, const std::string& at,
                   const std::string& staged, int depth, std::vector<Entry>* out) {
  if (depth > 64) return absl::InvalidArgumentError(at + ": more than 64 levels deep");
  if (!DebugfsSafe(name) || name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(at, ": a name with white space, a quote or a backslash"));
  }
  Entry e{at, "", "", {}};
  if (fstatat(parent_fd, name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(at, ": ", strerror(errno)));
  }
  if (S_ISLNK(e.st.st_mode)) {
    char target[PATH_MAX];
    ssize_t n = readlinkat(parent_fd, name.c_str(), target, sizeof(target) - 1);
    if (n < 0) return absl::InvalidArgumentError(absl::StrCat(at, ": ", strerror(errno)));
    e.link.assign(target, n);
    if (!DebugfsSafe(e.link)) {
      return absl::InvalidArgumentError(at + ": a link to a name debugfs cannot take");
    }
    out->push_back(std::move(e));
    return absl::OkStatus();
  }
  if (!S_ISDIR(e.st.st_mode) && !S_ISREG(e.st.st_mode)) {
    return absl::InvalidArgumentError(at + ": not a file, directory or symbolic link");
  }
  int fd = openat(parent_fd, name.c_str(),
                  O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
                      (S_ISDIR(e.st.st_mode) ? O_DIRECTORY : 0));
  struct stat now;
  if (fd < 0 || fstat(fd, &now) != 0 || now.st_ino != e.st.st_ino || now.st_dev != e.st.st_dev) {
    if (fd >= 0) close(fd);
    return absl::InvalidArgumentError(at + ": changed while it was copied");
  }
  if (S_ISREG(e.st.st_mode)) {
    e.staged = staged;
    int copy = open(staged.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    off_t left = e.st.st_size;
    char buf[65536];
    while (copy >= 0 && left > 0) {
      ssize_t n = read(fd, buf, std::min<off_t>(left, sizeof(buf)));
      if (n <= 0 || write(copy, buf, n) != n) break;
      left -= n;
    }
    close(fd);
    if (copy < 0 || close(copy) != 0 || left != 0) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": cannot copy: ", strerror(errno)));
    }
    out->push_back(std::move(e));
    return absl::OkStatus();
  }
  if (mkdir(staged.c_str(), 0700) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("staging ", at, ": ", strerror(errno)));
  }
  out->push_back(e);
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(at, ": ", strerror(errno)));
  }
  absl::Status status;
  while (dirent* d = readdir(dir)) {
    std::string child = d->d_name;
    if (child == "." || child == "..") continue;
    status = Stage(dirfd(dir), child, at + "/" + child, staged + "/" + child, depth + 1, out);
    if (!status.ok()) break;
  }
  closedir(dir);
  return status;
}

}  // namespace

bool Within(const std::string& path, const std::string& top) {
  return path == top || absl::StartsWith(path, top + "/");
}

absl::StatusOr<MountPlan> PlanMounts(const std::vector<MountEntry>& mounts) {
  MountPlan plan;
  for (const MountEntry& m : mounts) {
    std::string where = absl::StrCat("mount at ", m.destination);
    std::string dest = CleanPath(m.destination);
    if (dest.empty()) return absl::InvalidArgumentError(where + ": '..' in the destination");
    // The agent's standard set: the guest's /proc, /sys and /dev.
    if (Within(dest, "/proc") || Within(dest, "/sys") || Within(dest, "/dev")) continue;
    if (dest == "/") return absl::InvalidArgumentError(where + ": the root is root.path");
    if (Within(dest, kBindsDir)) return absl::InvalidArgumentError(where + ": Ember's own path");
    uint32_t flags = 0;
    std::string data;
    ParseOptions(m.options, &flags, &data);
    if (m.type == "bind" || (flags & MS_BIND)) {
      // A bind follows a symbolic link it is given: resolve it now.
      char real[PATH_MAX];
      struct stat st;
      struct statfs fs;
      if (m.source.empty() || m.source[0] != '/' || realpath(m.source.c_str(), real) == nullptr ||
          stat(real, &st) != 0 || statfs(real, &fs) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": bind source '", m.source, "': ",
            m.source.empty() || m.source[0] != '/' ? "not an absolute path" : strerror(errno)));
      }
      if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": bind source ", m.source,
            " is not a file or directory; a microVM gets a copy of what is bound"));
      }
      for (long magic : kRefusedFileSystems) {
        if (fs.f_type == magic) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": bind source ", m.source,
              " is on a pseudo file system (proc, sysfs, cgroup, ...), which a microVM "
              "cannot be given a copy of"));
        }
      }
      std::string copy = absl::StrCat(kBindsDir, "/", plan.copies.size());
      plan.copies.push_back({real, copy});
      plan.guest.push_back({"bind", copy, dest, flags | MS_BIND, ""});
      continue;
    }
    if (!kGuestTypes.count(m.type)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": type '", m.type, "' from '", m.source,
          "' cannot reach a microVM (Ember mounts kernel file systems in the guest and copies "
          "bind mounts into the container's image)"));
    }
    plan.guest.push_back({m.type, m.source.empty() ? m.type : m.source, dest, flags, data});
  }
  return plan;
}

uint64_t CopiesBytes(const MountPlan& plan) {
  uint64_t bytes = 0;
  for (const MountPlan::Copy& c : plan.copies) bytes += TreeSize(c.source);
  return bytes;
}

absl::Status ApplyToImage(const MountPlan& plan, const std::string& image,
                          const std::string& staging) {
  if (plan.copies.empty()) return absl::OkStatus();
  if (mkdir(staging.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot make ", staging, ": ", strerror(errno)));
  }
  auto cleanup = [&] { RemoveTree(staging); };
  std::vector<Entry> entries;
  for (size_t i = 0; i < plan.copies.size(); ++i) {
    const MountPlan::Copy& c = plan.copies[i];
    std::string parent = c.source.substr(0, c.source.rfind('/'));
    std::string name = c.source.substr(c.source.rfind('/') + 1);
    int parent_fd = open(parent.empty() ? "/" : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd < 0) {
      cleanup();
      return absl::InvalidArgumentError(absl::StrCat(c.source, ": ", strerror(errno)));
    }
    absl::Status s = Stage(parent_fd, name, c.copy, absl::StrCat(staging, "/", i), 0, &entries);
    close(parent_fd);
    if (!s.ok()) {
      cleanup();
      return absl::InvalidArgumentError(
          absl::StrCat("bind mount of ", c.source, ": cannot copy ", s.message()));
    }
  }
  std::string commands = absl::StrCat("mkdir ", kBindsDir, "\n");
  for (const Entry& e : entries) {
    if (S_ISDIR(e.st.st_mode)) {
      absl::StrAppend(&commands, "mkdir ", e.at, "\n");
    } else if (S_ISREG(e.st.st_mode)) {
      absl::StrAppend(&commands, "write ", e.staged, " ", e.at, "\n");
    } else {
      absl::StrAppend(&commands, "symlink ", e.at, " ", e.link, "\n");
    }
    absl::StrAppend(&commands, "sif ", e.at, " uid ", e.st.st_uid, "\n", "sif ", e.at, " gid ",
                    e.st.st_gid, "\n");
    if (!S_ISLNK(e.st.st_mode)) {
      absl::StrAppend(&commands, "sif ", e.at, " mode ",
                      absl::StrFormat("0%o", e.st.st_mode & (S_IFMT | 07777)), "\n");
    }
  }
  std::string commands_file = staging + "/commands";
  {
    std::ofstream out(commands_file);
    out << commands;
    if (!out.flush()) {
      cleanup();
      return absl::InternalError("cannot write " + commands_file);
    }
  }
  std::string output;
  absl::Status s = RunTool({"debugfs", "-w", "-f", commands_file, image}, &output);
  cleanup();
  if (!s.ok()) return s;
  // debugfs exits 0 whatever its commands did: what it printed tells.
  std::vector<std::string> problems;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "debugfs") || absl::StartsWith(line, "Allocated inode")) continue;
    problems.emplace_back(line);
  }
  if (!problems.empty()) {
    return absl::InternalError(absl::StrCat("copying bind mounts into the container's image: ",
                                            absl::StrJoin(problems, "; ")));
  }
  return absl::OkStatus();
}

}  // namespace ember::oci
