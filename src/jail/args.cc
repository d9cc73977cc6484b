#include "src/jail/args.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <map>

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
    "  --exec-file PATH         the VMM binary, copied into the jail\n"
    "  --uid UID, --gid GID     the VMM runs as these (not 0)\n"
    "  --chroot-base-dir DIR    jails go to DIR/<exec name>/<id>/root (default /srv/jailer)\n"
    "  --netns PATH             join this network namespace (/var/run/netns/NAME)\n"
    "  --cgroup-version 1|2     the cgroup hierarchy to use (default 1)\n"
    "  --cgroup FILE=VALUE      write VALUE to the VM's cgroup FILE (repeatable),\n"
    "                           e.g. memory.limit_in_bytes=268435456 or cpu.max=50000\n"
    "  --parent-cgroup NAME     the VM's cgroup goes under NAME (default: exec name)\n"
    "  --resource-limit R=N     fsize=BYTES or no-file=COUNT (repeatable)\n"
    "  --daemonize              new session, stdio on /dev/null\n"
    "  --new-pid-ns             the VMM is pid 1 of a new PID namespace; its host pid goes to\n"
    "                           <jail root>/<exec name>.pid\n"
    "  -- ARGS                  passed to the VMM after --id ID\n";

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

bool PlainAbsolutePath(const std::string& path) {
  return path.size() > 1 && path.front() == '/' && PlainRelativePath(path.substr(1));
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
  return absl::StrCat(chroot_base_dir, "/", exec_name, "/", id, "/root");
}

absl::StatusOr<JailerArgs> ParseJailerArgs(const std::vector<std::string>& args) {
  JailerArgs out;
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
  out.exec_file = single["--exec-file"];
  struct stat st;
  if (!PlainAbsolutePath(out.exec_file) || lstat(out.exec_file.c_str(), &st) != 0 ||
      !S_ISREG(st.st_mode)) {
    return Bad("--exec-file",
               absl::StrCat("'", out.exec_file, "' must be the absolute path of a regular file"));
  }
  out.exec_name = out.exec_file.substr(out.exec_file.rfind('/') + 1);
  ASSIGN_OR_RETURN(out.uid, Id32("--uid", single["--uid"]));
  ASSIGN_OR_RETURN(out.gid, Id32("--gid", single["--gid"]));
  if (out.uid == 0 || out.gid == 0) {
    return Bad(out.uid == 0 ? "--uid" : "--gid", "must not be 0: the VMM never runs as root");
  }
  if (single.count("--chroot-base-dir")) out.chroot_base_dir = single["--chroot-base-dir"];
  if (!PlainAbsolutePath(out.chroot_base_dir)) {
    return Bad("--chroot-base-dir",
               absl::StrCat("'", out.chroot_base_dir, "' must be an absolute path without '..'"));
  }
  if (single.count("--netns")) {
    out.netns = single["--netns"];
    if (!PlainAbsolutePath(out.netns)) {
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
