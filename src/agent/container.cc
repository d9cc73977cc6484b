#include "src/agent/container.h"

#include <dirent.h>
#include <errno.h>
#include <linux/limits.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

namespace ember::agent {
namespace {

// Where the host puts the copies of bind mounts in the container's image.
constexpr char kBindsCopies[] = "/.ember-binds";

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

// config.json's mount `m`, made from inside the container's root (the
// caller has chrooted there, so links on the way resolve in it). A bind's
// source is the host's copy in the image: the target is made as a
// directory or a file to match it, bound, then remounted with the flags
// (a bind takes its flags only on a remount).
bool MountOne(const MountSpec& m, std::string* error) {
  const std::string& target = m.target;
  // Made by an earlier request (an exec before the init's): its copy may
  // be hidden by now.
  if (IsMountPoint(target)) return true;
  if (m.flags & MS_BIND) {
    struct stat source;
    if (stat(m.source.c_str(), &source) != 0) {
      *error = "the copy of the bind mount at " + target + " is missing: " + strerror(errno);
      return false;
    }
    bool dir = S_ISDIR(source.st_mode);
    if (!MakeDirs(dir ? target : target.substr(0, target.rfind('/')), error)) return false;
    if (!dir) {
      int fd = open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd >= 0) close(fd);
    }
    struct stat at;
    if (stat(target.c_str(), &at) != 0 || S_ISDIR(at.st_mode) != dir) {
      *error = "cannot bind at " + target + ": the root has " +
               (dir ? "something other than a directory" : "a directory or nothing") + " there";
      return false;
    }
    unsigned long rec = m.flags & MS_REC;
    if (mount(m.source.c_str(), target.c_str(), nullptr, MS_BIND | rec, nullptr) != 0 ||
        ((m.flags & ~(MS_BIND | MS_REC)) &&
         mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | m.flags, nullptr) != 0)) {
      *error = "cannot bind " + target + " in the container: " + strerror(errno);
      return false;
    }
    return true;
  }
  bool ok = MountOnce(m.source.c_str(), target, m.type.c_str(), m.flags, error,
                      m.data.empty() ? nullptr : m.data.c_str());
  if (!ok) *error += " (config.json's mount of type " + m.type + " at " + m.target + ")";
  return ok;
}

// The mounts, made by a child chrooted into `root`: mount(2) resolves its
// paths there, while the mounts land in the one namespace everyone shares.
bool MountInRoot(const std::string& root, const std::vector<MountSpec>& mounts,
                 std::string* error) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + strerror(errno);
    return false;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(report[0]);
    std::string why;
    bool ok = chroot(root.c_str()) == 0 && chdir("/") == 0;
    if (!ok) why = "cannot enter " + root + ": " + strerror(errno);
    bool binds = false;
    for (size_t i = 0; ok && i < mounts.size(); ++i) {
      ok = MountOne(mounts[i], &why);
      binds |= (mounts[i].flags & MS_BIND) != 0;
    }
    // The copies' directory, emptied for the container's eyes (the binds
    // hold what they need of it); once, whichever request came first (an
    // exec before the init's).
    if (ok && binds && !IsMountPoint(kBindsCopies)) {
      (void)mount("tmpfs", kBindsCopies, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=4k,mode=000");
    }
    if (!ok) (void)!write(report[1], why.data(), why.size());
    _exit(ok ? 0 : 1);
  }
  close(report[1]);
  if (pid < 0) {
    close(report[0]);
    *error = std::string("fork: ") + strerror(errno);
    return false;
  }
  char buf[1024];
  ssize_t n;
  std::string why;
  while ((n = read(report[0], buf, sizeof(buf))) > 0) why.append(buf, n);
  close(report[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  *error = why.empty() ? "the mounts' child failed" : why;
  return false;
}

}  // namespace

bool MountOnce(const char* source, const std::string& target, const char* type,
               unsigned long flags, std::string* error, const char* data) {
  if (!MakeDirs(target, error)) return false;
  if (IsMountPoint(target)) return true;
  if (mount(source, target.c_str(), type, flags, data) != 0) {
    *error = std::string("cannot mount ") + source + " on " + target + ": " + strerror(errno);
    return false;
  }
  return true;
}

void KillProcessesIn(const std::string& root) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* e = readdir(proc)) {
    char* end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 1) continue;
    char link[PATH_MAX];
    std::string path = std::string("/proc/") + e->d_name + "/root";
    ssize_t n = readlink(path.c_str(), link, sizeof(link));
    if (n > 0 && root.compare(0, std::string::npos, link, n) == 0) kill(pid, SIGKILL);
  }
  closedir(proc);
}

bool IsMountPoint(const std::string& path) {
  // The kernel says so (5.8 and later): a bind mount from the same file
  // system has its parent's device, so the device alone cannot tell.
  struct statx x;
  if (statx(AT_FDCWD, path.c_str(), 0, STATX_BASIC_STATS, &x) == 0 &&
      (x.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) {
    return (x.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
  }
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
  if (!spec.mounts.empty() && !MountInRoot(root, spec.mounts, error)) return false;
  // The root's own mount only: the mounts in it keep their flags, as in
  // runc, which remounts the root read-only last.
  if (spec.root_readonly &&
      mount(nullptr, root.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    *error = "cannot make the container's root read-only: " + std::string(strerror(errno));
    return false;
  }
  return true;
}

}  // namespace ember::agent
