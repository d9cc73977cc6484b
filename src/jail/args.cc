#include "src/jail/args.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "src/common/instance_id.h"
#include "src/common/status_macros.h"

namespace ember::jail {

const char kJailerUsage[] =
    "Usage: ember-jailer --id ID --exec-file PATH --uid UID --gid GID [OPTIONS] [-- VMM ARGS]\n"
    "\n"
    "  --id ID                  1-64 letters, digits or '-'; names the jail and cgroup\n"
    "  --exec-file PATH         the VMM binary (symlinks resolved), copied into the jail\n"
    "  --uid UID, --gid GID     the VMM runs as these; 0 is accepted with a warning\n"
    "  --chroot-base-dir DIR    jails go to DIR/<exec name>/<id>/root (default /srv/jailer)\n"
    "  --netns PATH             join this network namespace (/var/run/netns/NAME)\n"
    "  --cgroup-version 1|2     the cgroup hierarchy to use (default 1)\n"
    "  --cgroup FILE=VALUE      write VALUE to the VM's cgroup FILE (repeatable),\n"
    "                           e.g. memory.limit_in_bytes=268435456 or cpu.max=50000\n"
    "  --parent-cgroup NAME     the VM's cgroup goes under NAME (default: exec name); with\n"
    "                           version 2 and no --cgroup, the VMM joins NAME if it exists\n"
    "  --resource-limit R=N     fsize=BYTES or no-file=COUNT (repeatable)\n"
    "  --daemonize              new session, stdio on /dev/null; the jailer exits once\n"
    "                           the VMM's pid is written\n"
    "  --new-pid-ns             the VMM is pid 1 of a new PID namespace\n"
    "  --help, -h, --version    print this text or the version\n"
    "  -- ARGS                  passed to the VMM after --id ID --start-time-us T\n"
    "                           --start-time-cpu-us C --parent-cpu-time-us P\n"
    "\n"
    "The VMM's host pid goes to <jail root>/<exec name>.pid. A VMM named firecracker*\n"
    "serves its API at /run/firecracker.socket in the jail by default, ember at\n"
    "/run/ember.socket.\n";

namespace {

absl::Status Bad(absl::string_view arg, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(arg, " ", why));
}

// Path components a jail or cgroup name may have: no "..", ".", empty
// parts or odd characters.
bool PlainRelativePath(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.size() > 255) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
    for (char c : part) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' &&
          c != '.') {
        return false;
      }
    }
  }
  return true;
}

// Absolute, with no empty, "." or ".." parts; any other characters.
bool CleanAbsolutePath(const std::string& path) {
  if (path.size() < 2 || path.front() != '/' || path.size() > 4095) return false;
  for (absl::string_view part : absl::StrSplit(path.substr(1), '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

// The path with every symlink resolved, or nullopt (errno set).
std::optional<std::string> RealPath(const std::string& path) {
  char* resolved = realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return std::nullopt;
  std::string out = resolved;
  free(resolved);
  return out;
}

// As Firecracker's jailer: the file a path (relative, or through
// symlinks) names, which must be a regular file.
absl::Status ResolveExecFile(const std::string& given, JailerArgs* out) {
  std::optional<std::string> path = RealPath(given);
  struct stat st;
  if (!path || stat(path->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Bad("--exec-file", absl::StrCat("'", given, "' must name a regular file"));
  }
  out->exec_file = *path;
  out->exec_name = path->substr(path->rfind('/') + 1);
  // The name becomes a directory, a cgroup and the copy's file name.
  if (!PlainRelativePath(out->exec_name)) {
    return Bad("--exec-file", absl::StrCat("'", given, "' resolves to '", *path,
                                           "', whose name may have only letters, digits, "
                                           "'-', '_' or '.'"));
  }
  return absl::OkStatus();
}

absl::Status ResolveChrootBase(std::string given, JailerArgs* out) {
  if (given.size() > 1 && given.back() == '/') given.pop_back();  // "/srv/jailer/"
  if (!CleanAbsolutePath(given)) {
    return Bad("--chroot-base-dir",
               absl::StrCat("'", given, "' must be an absolute path without '.', '..' or '//'"));
  }
  // An existing base is taken through its symlinks (/var/run -> /run); the
  // jail is then built below the real directory, refusing any symlink.
  std::optional<std::string> path = RealPath(given);
  if (!path) {
    out->chroot_base_dir = given;  // made by CreateJail
    return absl::OkStatus();
  }
  struct stat st;
  if (stat(path->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Bad("--chroot-base-dir", absl::StrCat("'", given, "' is not a directory"));
  }
  out->chroot_base_dir = *path;
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> Id32(const std::string& arg, const std::string& value) {
  uint32_t n;
  if (!absl::SimpleAtoi(value, &n) || value.empty() || !absl::ascii_isdigit(value[0])) {
    return Bad(arg, absl::StrCat("'", value, "' must be a number"));
  }
  return n;
}

absl::Status ParseCgroup(const std::string& value, JailerArgs* out) {
  std::pair<std::string, std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
  const std::string& file = kv.first;
  size_t dot = file.find('.');
  if (value.find('=') == std::string::npos || dot == 0 || dot == std::string::npos || dot + 1 == file.size() ||
      !PlainRelativePath(file) || file.find('/') != std::string::npos) {
    return Bad("--cgroup", absl::StrCat("'", value,
                                        "' must be <controller>.<file>=<value>, e.g. "
                                        "memory.limit_in_bytes=268435456"));
  }
  if (kv.second.empty() || kv.second.find_first_of("\n\0", 0, 2) != std::string::npos) {
    return Bad("--cgroup", absl::StrCat("'", value, "' needs a one-line value"));
  }
  out->cgroups.push_back({file.substr(0, dot), file, kv.second});
  return absl::OkStatus();
}

absl::Status ParseLimit(const std::string& value, JailerArgs* out) {
  std::pair<std::string, std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
  uint64_t n;
  if (!absl::SimpleAtoi(kv.second, &n) || kv.second.empty() ||
      !absl::ascii_isdigit(kv.second[0])) {
    return Bad("--resource-limit", absl::StrCat("'", value, "' needs a number after '='"));
  }
  if (kv.first == "fsize") {
    out->resource_limits.push_back({RLIMIT_FSIZE, n});
  } else if (kv.first == "no-file") {
    out->resource_limits.push_back({RLIMIT_NOFILE, n});
  } else {
    return Bad("--resource-limit", absl::StrCat("'", kv.first, "' is not fsize or no-file"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string JailerArgs::jail_root() const {
  // The base may resolve to "/".
  return absl::StrCat(chroot_base_dir == "/" ? "" : chroot_base_dir, "/", exec_name, "/", id,
                      "/root");
}

absl::StatusOr<JailerArgs> ParseJailerArgs(const std::vector<std::string>& args) {
  JailerArgs out;
  // As Firecracker's parser: --help or --version before "--" wins.
  for (const std::string& arg : args) {
    if (arg == "--") break;
    if (arg == "--help" || arg == "-h") out.help = true;
    if (arg == "--version") out.version = true;
  }
  if (out.help || out.version) return out;

  std::map<std::string, std::string> single;
  static const char* const kSingle[] = {"--id",      "--exec-file",       "--uid",
                                        "--gid",     "--chroot-base-dir", "--netns",
                                        "--cgroup-version", "--parent-cgroup"};
  size_t i = 0;
  for (; i < args.size(); i++) {
    std::string arg = args[i];
    if (arg == "--") {
      i++;
      break;
    }
    if (arg == "--daemonize" || arg == "--new-pid-ns") {
      (arg == "--daemonize" ? out.daemonize : out.new_pid_ns) = true;
      continue;
    }
    bool known = arg == "--cgroup" || arg == "--resource-limit";
    for (const char* s : kSingle) known = known || arg == s;
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown argument '", arg, "'"));
    if (i + 1 >= args.size()) return Bad(arg, "needs a value");
    const std::string& value = args[++i];
    if (arg == "--cgroup") {
      RETURN_IF_ERROR(ParseCgroup(value, &out));
    } else if (arg == "--resource-limit") {
      RETURN_IF_ERROR(ParseLimit(value, &out));
    } else if (!single.emplace(arg, value).second) {
      return Bad(arg, "is given twice");
    }
  }
  out.exec_args.assign(args.begin() + std::min(i, args.size()), args.end());

  for (const char* required : {"--id", "--exec-file", "--uid", "--gid"}) {
    if (!single.count(required)) return Bad(required, "is required");
  }
  out.id = single["--id"];
  if (!ValidInstanceId(out.id)) {
    return Bad("--id", absl::StrCat("'", out.id, "' must be 1-64 letters, digits or '-'"));
  }
  ASSIGN_OR_RETURN(out.uid, Id32("--uid", single["--uid"]));
  ASSIGN_OR_RETURN(out.gid, Id32("--gid", single["--gid"]));
  RETURN_IF_ERROR(ResolveExecFile(single["--exec-file"], &out));
  RETURN_IF_ERROR(ResolveChrootBase(
      single.count("--chroot-base-dir") ? single["--chroot-base-dir"] : out.chroot_base_dir,
      &out));
  if (single.count("--netns")) {
    out.netns = single["--netns"];
    if (!CleanAbsolutePath(out.netns)) {
      return Bad("--netns", absl::StrCat("'", out.netns, "' must be an absolute path"));
    }
  }
  if (single.count("--cgroup-version")) {
    const std::string& v = single["--cgroup-version"];
    if (v != "1" && v != "2") return Bad("--cgroup-version", absl::StrCat("'", v, "' must be 1 or 2"));
    out.cgroup_version = v == "1" ? 1 : 2;
  }
  out.parent_cgroup = single.count("--parent-cgroup") ? single["--parent-cgroup"] : out.exec_name;
  if (!PlainRelativePath(out.parent_cgroup)) {
    return Bad("--parent-cgroup",
               absl::StrCat("'", out.parent_cgroup, "' must be a relative path without '..'"));
  }
  return out;
}

}  // namespace ember::jail
