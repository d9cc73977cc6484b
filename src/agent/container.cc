#include "src/agent/container.h"

#include <errno.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

namespace ember::agent {
namespace {

bool MakeDirs(const std::string& path, std::string* error) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      *error = "cannot make " + prefix + ": " + strerror(errno);
      return false;
    }
  }
  return true;
}

bool MountOnce(const char* source, const std::string& target, const char* type,
               unsigned long flags, std::string* error) {
  if (!MakeDirs(target, error)) return false;
  if (IsMountPoint(target)) return true;
  if (mount(source, target.c_str(), type, flags, nullptr) != 0) {
    *error = std::string("cannot mount ") + source + " on " + target + ": " + strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

bool IsMountPoint(const std::string& path) {
  struct stat self, parent;
  if (stat(path.c_str(), &self) != 0 || stat((path + "/..").c_str(), &parent) != 0) return false;
  return self.st_dev != parent.st_dev || self.st_ino == parent.st_ino;
}

bool PrepareRoot(const ContainerSpec& spec, std::string* error) {
  if (spec.root_device.empty()) return true;
  const std::string& root = spec.root_dir;
  if (!MountOnce(spec.root_device.c_str(), root, "ext4", 0, error)) return false;
  constexpr unsigned long kSafe = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  return MountOnce("proc", root + "/proc", "proc", kSafe, error) &&
         MountOnce("sysfs", root + "/sys", "sysfs", kSafe | MS_RDONLY, error) &&
         MountOnce("/dev", root + "/dev", nullptr, MS_BIND | MS_REC, error);
}

}  // namespace ember::agent
