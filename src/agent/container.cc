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
               unsigned long flags, std::string* error, const char* data = nullptr) {
  if (!MakeDirs(target, error)) return false;
  if (IsMountPoint(target)) return true;
  if (mount(source, target.c_str(), type, flags, data) != 0) {
    *error = std::string("cannot mount ") + source + " on " + target + ": " + strerror(errno);
    return false;
  }
  return true;
}

// config.json's mount `m` under `root`. A bind of a path onto itself is a
// bind mount the host copied into the image: bound there, then remounted
// with its flags (a bind's flags apply only on a remount).
bool MountOne(const std::string& root, const MountSpec& m, std::string* error) {
  std::string target = root + m.target;
  if (m.flags & MS_BIND) {
    if (!MakeDirs(target, error)) return false;
    if (IsMountPoint(target)) return true;
    std::string source = m.source.empty() || m.source[0] != '/' ? target : root + m.source;
    unsigned long rec = m.flags & MS_REC;
    if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND | rec, nullptr) != 0 ||
        mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | m.flags, nullptr) != 0) {
      *error = "cannot bind " + m.target + " in the container: " + strerror(errno);
      return false;
    }
    return true;
  }
  bool ok = MountOnce(m.source.c_str(), target, m.type.c_str(), m.flags, error,
                      m.data.empty() ? nullptr : m.data.c_str());
  if (!ok) *error += " (config.json's mount of type " + m.type + " at " + m.target + ")";
  return ok;
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
  if (!MountOnce("proc", root + "/proc", "proc", kSafe, error) ||
      !MountOnce("sysfs", root + "/sys", "sysfs", kSafe | MS_RDONLY, error) ||
      !MountOnce("/dev", root + "/dev", nullptr, MS_BIND | MS_REC, error)) {
    return false;
  }
  for (const MountSpec& m : spec.mounts) {
    if (!MountOne(root, m, error)) return false;
  }
  return true;
}

}  // namespace ember::agent
