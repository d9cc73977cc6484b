#include "src/oci/request.h"

#include <fcntl.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "src/agent/fd.h"
#include "src/agent/spawn.h"
#include "src/oci/mounts.h"
#include "src/oci/vm.h"

namespace ember::oci {
namespace {

enum class Found { kFile, kNothing, kCannotTell };

// Walks `path` in the directory `root` as the guest will see it, symbolic
// links resolved inside it. What is at or below a path of `covered` (the
// mounts' targets) cannot be told here, and the directories on the way to
// one count as made (the agent makes them). *resolved: where the walk got
// to, with what follows a missing component as written.
Found Walk(int root, const std::string& path, const std::vector<std::string>& covered,
           std::string* resolved) {
  std::deque<std::string> left;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    left.emplace_back(part);
  }
  std::string at;  // resolved so far: "" is the root, else "/a/b"
  int links = 0;
  auto stop = [&](Found found, std::string rest) {
    for (const std::string& part : left) absl::StrAppend(&rest, "/", part);
    *resolved = std::move(rest);
    return found;
  };
  while (!left.empty()) {
    std::string part = std::move(left.front());
    left.pop_front();
    if (part == ".") continue;
    if (part == "..") {
      at.resize(at.rfind('/') == std::string::npos ? 0 : at.rfind('/'));
      continue;
    }
    std::string next = at + "/" + part;
    auto covers = [&](const std::string& c) { return Within(next, c); };
    if (std::any_of(covered.begin(), covered.end(), covers)) {
      return stop(Found::kCannotTell, next);
    }
    struct stat st;
    if (fstatat(root, ("." + next).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      auto leads_to = [&](const std::string& c) { return Within(c, next); };
      if (!std::any_of(covered.begin(), covered.end(), leads_to)) {
        return stop(Found::kNothing, next);
      }
      at = std::move(next);
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(root, ("." + next).c_str(), target, sizeof(target) - 1);
      if (n <= 0 || ++links > 40) return stop(Found::kNothing, next);  // ELOOP, as exec says
      std::vector<std::string> parts = absl::StrSplit(absl::string_view(target, n), '/',
                                                      absl::SkipEmpty());
      left.insert(left.begin(), parts.begin(), parts.end());
      if (target[0] == '/') at.clear();
      continue;
    }
    if (!left.empty() && !S_ISDIR(st.st_mode)) return stop(Found::kNothing, next);
    at = std::move(next);
  }
  *resolved = at;
  struct stat st;
  return !at.empty() && fstatat(root, ("." + at).c_str(), &st, 0) == 0 && S_ISREG(st.st_mode)
             ? Found::kFile
             : Found::kNothing;
}

}  // namespace

agent::ExecRequest ContainerRequest(const ProcessSpec& process, const std::string& hostname,
                                    std::vector<agent::MountSpec> mounts) {
  agent::ExecRequest r;
  r.flags = agent::ExecRequest::kFlagStdin | agent::ExecRequest::kFlagContainer;
  if (process.terminal) r.flags |= agent::ExecRequest::kFlagTty;
  r.cwd = process.cwd;
  r.argv = process.args;
  r.env = process.env;
  r.container.uid = process.uid;
  r.container.gid = process.gid;
  r.container.groups = process.additional_gids;
  r.container.root_device = kContainerDevice;
  r.container.root_dir = kContainerRootDir;
  r.container.hostname = hostname;
  r.container.mounts = std::move(mounts);
  r.container.set_capabilities = process.has_capabilities;
  r.container.cap_bounding = process.cap_bounding;
  r.container.cap_effective = process.cap_effective;
  r.container.cap_permitted = process.cap_permitted;
  r.container.cap_inheritable = process.cap_inheritable;
  r.container.cap_ambient = process.cap_ambient;
  r.container.no_new_privileges = process.no_new_privileges;
  for (const ProcessSpec::Rlimit& l : process.rlimits) {
    r.container.rlimits.push_back({l.resource, l.soft, l.hard});
  }
  return r;
}

absl::Status CheckRequest(const agent::ExecRequest& request) {
  std::string payload = agent::EncodeExec(request);
  if (payload.size() > agent::kMaxExecPayload) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the process's args, env and the container's mounts take ", payload.size(),
        " bytes; the guest agent takes at most ", agent::kMaxExecPayload));
  }
  agent::ExecRequest decoded;
  std::string error;
  if (!agent::DecodeExec(payload, &decoded, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("the guest agent would refuse it: ", error));
  }
  return absl::OkStatus();
}

absl::Status FindProgram(const agent::ExecRequest& request, const std::string& root) {
  agent::Fd dir(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid() || request.argv.empty()) return absl::OkStatus();  // LoadBundle said why
  // What the agent mounts, at each target as written and as it resolves
  // in the root (the agent mounts from inside it: "/bin/x" may be
  // "/usr/bin/x").
  std::vector<std::string> covered = {"/proc", "/sys", "/dev"};
  for (const agent::MountSpec& m : request.container.mounts) {
    std::string resolved;
    Walk(dir.get(), m.target, {}, &resolved);
    covered.push_back(m.target);
    if (!resolved.empty()) covered.push_back(resolved);
  }
  const std::string& program = request.argv[0];
  std::string cwd = request.cwd.empty() ? "/" : request.cwd;
  for (const std::string& candidate :
       agent::ExecCandidates(program, agent::SearchPath(request.env))) {
    std::string path = candidate[0] == '/' ? candidate : cwd + "/" + candidate;
    std::string resolved;
    if (Walk(dir.get(), path, covered, &resolved) != Found::kNothing) return absl::OkStatus();
  }
  std::string quoted = absl::StrCat("exec: \"", program, "\": ");
  return absl::NotFoundError(absl::StrCat(
      "unable to start container process: ", quoted,
      program.find('/') == std::string::npos
          ? "executable file not found in $PATH"
          : absl::StrCat("stat ", program, ": no such file or directory")));
}

}  // namespace ember::oci
