// libFuzzer target: what ember-oci reads from containerd and its users
// (src/oci/): config.json, exec's process.json and update's resources,
// then the plans made from them, as create, exec and update make them.
// The input's first byte chooses which; the rest is the JSON.
//
// Checked beyond ASan and UBSan: an accepted config.json has a program,
// an absolute cwd and root, a microVM size in range and hooks that parse;
// when its mounts plan too, the agent's request built from it is one the
// agent accepts unless it is too large (create's checks and the agent's
// agree: CheckRequest is only a net); the program is looked for in a
// small root with links (absolute, relative, a loop) without hanging or
// escaping it; cgroup settings are one line each, in a cgroup below the
// mount; a rejection always says why.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_split.h"
#include "src/agent/protocol.h"
#include "src/agent/spawn.h"
#include "src/oci/cgroups.h"
#include "src/oci/hooks.h"
#include "src/oci/mounts.h"
#include "src/oci/request.h"
#include "src/oci/spec.h"
#include "src/oci/vm.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;
using namespace ember::oci;

namespace {

// A root file system to look programs up in, made once.
const std::string& Root() {
  // Never destroyed: the exit handler below still reads it.
  static const std::string& root = *new std::string([] {
    char tmpl[] = "/tmp/ember-oci-fuzz-XXXXXX";
    std::string r = mkdtemp(tmpl);
    // No file to find: links only, some to where the host has files (an
    // escape would find /etc/passwd or /bin/sh).
    mkdir((r + "/usr").c_str(), 0755);
    mkdir((r + "/usr/bin").c_str(), 0755);
    symlink("usr/bin", (r + "/bin").c_str());
    symlink("/bin/busybox", (r + "/usr/bin/sh").c_str());
    symlink("loop", (r + "/usr/bin/loop").c_str());
    symlink("../../../../../etc", (r + "/usr/bin/up").c_str());
    symlink("/etc", (r + "/usr/bin/etc").c_str());
    symlink("/", (r + "/usr/bin/top").c_str());
    atexit([] { RemoveTree(Root()); });
    return r;
  }());
  return root;
}

template <typename T>
void CheckRefusal(const absl::StatusOr<T>& s) {
  if (!s.ok() && s.status().message().empty()) Fail("a refusal without a message");
}

void CheckCgroup(const std::string& path, const Resources& r) {
  for (int version : {1, 2}) {
    auto plan = PlanCgroup(path, r, version);
    CheckRefusal(plan);
    if (!plan.ok()) continue;
    if (plan->relative.empty() || plan->relative[0] == '/') Fail("a cgroup outside the mount");
    for (absl::string_view part : absl::StrSplit(plan->relative, '/')) {
      if (part.empty() || part == "." || part == "..") Fail("a cgroup outside the mount");
    }
    for (const jail::CgroupSetting& s : plan->settings) {
      if (s.value.find('\n') != std::string::npos || s.file.find('/') != std::string::npos) {
        Fail("a cgroup setting of more than one line or file");
      }
    }
  }
}

void CheckProcess(const ProcessSpec& p) {
  if (p.args.empty() || p.args[0].empty()) Fail("a process without a program");
  if (p.cwd.empty() || p.cwd[0] != '/') Fail("a relative cwd");
}

bool NamesTheAgentsOwn(const std::string& path) {
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "proc" || part == "sys" || part == "dev") return true;
  }
  return false;
}

void CheckRequestOf(agent::ExecRequest request) {
  absl::Status s = CheckRequest(request);
  if (!s.ok() && agent::EncodeExec(request).size() <= agent::kMaxExecPayload) {
    fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    Fail("the parser took a process the agent's decoder refuses");
  }
  if (!FindProgram(request, Root()).ok() || !request.container.mounts.empty()) return;
  // Found in a root without files: only through the agent's /proc, /sys or
  // /dev (which it cannot tell), else the walk left the root.
  std::string cwd = request.cwd.empty() ? "/" : request.cwd;
  bool own = false;
  for (const std::string& c :
       agent::ExecCandidates(request.argv[0], agent::SearchPath(request.env))) {
    own |= NamesTheAgentsOwn(c[0] == '/' ? c : cwd + "/" + c);
  }
  if (!own) Fail("a program found outside the root");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  uint8_t mode = in.U8() % 3;
  auto rest = in.Rest();
  std::string json(reinterpret_cast<const char*>(rest.data()), rest.size());
  if (mode == 1) {  // exec --process
    auto p = ParseProcess(json, "process");
    CheckRefusal(p);
    if (!p.ok()) return 0;
    CheckProcess(*p);
    CheckRequestOf(ContainerRequest(*p, ""));
    return 0;
  }
  if (mode == 2) {  // update --resources
    auto r = ParseResources(json);
    CheckRefusal(r);
    if (r.ok()) CheckCgroup("/default/box", *r);
    return 0;
  }
  auto spec = ParseBundleConfig(json, "/bundle");
  CheckRefusal(spec);
  if (!spec.ok()) return 0;
  CheckProcess(spec->process);
  if (spec->root_path.empty() || spec->root_path[0] != '/') Fail("a relative root");
  if (spec->vm.vcpus < 1 || spec->vm.vcpus > VmSize::kMaxVcpus ||
      spec->vm.mem_mib < VmSize::kMinMemMib || spec->vm.mem_mib > VmSize::kMaxMemMib) {
    Fail("a microVM size out of range");
  }
  if (!ParseHooks(spec->hooks_json).ok()) Fail("accepted hooks that do not parse");
  if (!spec->cgroups_path.empty()) CheckCgroup(spec->cgroups_path, spec->resources);
  auto mounts = PlanMounts(spec->mounts);
  CheckRefusal(mounts);
  if (!mounts.ok()) return 0;
  agent::ExecRequest request = ContainerRequest(spec->process, spec->hostname, mounts->guest);
  request.container.root_readonly = spec->root_readonly;
  request.flags |= agent::ExecRequest::kFlagInit;
  CheckRequestOf(std::move(request));
  return 0;
}
