// libFuzzer target: ember-jailer's command line (the input split at NUL
// bytes into arguments) through ParseJailerArgs. Checked beyond ASan and
// UBSan, for every accepted command line, what args.h promises the jail
// code: the id is one safe path component, the paths are absolute (or, for
// the parent cgroup, relative) without "." or ".." or empty components,
// the VMM never runs as root, and cgroup settings name one file with a
// one-line value. (The exec file must exist: the checked-in seeds name
// /bin/true.)
#include "src/common/instance_id.h"
#include "src/jail/args.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;

namespace {

bool PlainComponents(const std::string& path, size_t from) {
  if (path.size() <= from) return false;
  size_t start = from;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}
bool Absolute(const std::string& path) { return path[0] == '/' && PlainComponents(path, 1); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  std::vector<std::string> args = in.Args();
  absl::StatusOr<jail::JailerArgs> parsed = jail::ParseJailerArgs(args);
  if (!parsed.ok()) return 0;
  const jail::JailerArgs& a = *parsed;
  if (a.help || a.version) return 0;  // nothing else is set
  if (!ValidInstanceId(a.id)) Fail("an accepted id is not one safe path component");
  if (a.exec_file.empty() || !Absolute(a.exec_file)) Fail("exec file not a plain absolute path");
  if (a.exec_name.empty() || a.exec_name.find('/') != std::string::npos ||
      a.exec_name == "." || a.exec_name == "..") {
    Fail("exec name not one path component");
  }
  if (!Absolute(a.chroot_base_dir)) Fail("chroot base dir not a plain absolute path");
  if (!Absolute(a.jail_root())) Fail("the jail root is not a plain absolute path");
  if (!a.netns.empty() && !Absolute(a.netns)) Fail("netns not a plain absolute path");
  if (a.parent_cgroup.empty() || a.parent_cgroup[0] == '/' || !PlainComponents(a.parent_cgroup, 0)) {
    Fail("parent cgroup not a plain relative path");
  }
  if (a.cgroup_version != 1 && a.cgroup_version != 2) Fail("cgroup version not 1 or 2");
  for (const jail::CgroupSetting& c : a.cgroups) {
    if (c.file.find('/') != std::string::npos || c.file == "." || c.file == ".." ||
        c.file.rfind(c.controller + ".", 0) != 0 || c.controller.empty()) {
      Fail("a cgroup setting names no single file of its controller");
    }
    if (c.value.empty() || c.value.find_first_of(std::string("\n\0", 2)) != std::string::npos) {
      Fail("a cgroup value is not one line");
    }
  }
  return 0;
}
