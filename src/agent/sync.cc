#include "src/agent/sync.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "src/agent/container.h"
#include "src/agent/fd.h"

namespace ember::agent {
namespace {

// Where the agent mounts a device to write its copies (+ the device's path).
constexpr char kSyncMounts[] = "/run/ember-sync";
// Deeper than any tree a SYNC carries: only what the guest made goes there.
constexpr int kMaxDepth = 256;

std::string Failed(const std::string& what, const std::string& path) {
  return "cannot " + what + " " + path + ": " + strerror(errno);
}

std::string ParentOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string NameOf(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// The directory at `path` below `top` ("" is top), each step refusing a
// symbolic link.
Fd OpenDir(int top, const std::string& path) {
  Fd dir(fcntl(top, F_DUPFD_CLOEXEC, 0));
  size_t start = 0;
  while (dir.valid() && start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string name = path.substr(start, end - start);
    start = end + 1;
    if (name.empty()) continue;
    dir.reset(openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  return dir;
}

std::vector<std::string> Names(int dir) {
  std::vector<std::string> names;
  DIR* d = fdopendir(fcntl(dir, F_DUPFD_CLOEXEC, 0));
  if (d == nullptr) return names;
  rewinddir(d);  // the duplicate shares the offset an earlier listing left at the end
  while (dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  }
  closedir(d);
  return names;
}

// Removes `name` in `dir` and, for a directory, all below it.
bool RemoveAt(int dir, const std::string& name, int depth = 0) {
  if (unlinkat(dir, name.c_str(), 0) == 0 || errno == ENOENT) return true;
  if (errno != EISDIR || depth > kMaxDepth) return false;
  Fd sub(openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!sub.valid()) return false;
  for (const std::string& child : Names(sub.get())) {
    if (!RemoveAt(sub.get(), child, depth + 1)) return false;
  }
  return unlinkat(dir, name.c_str(), AT_REMOVEDIR) == 0;
}

// Owner first: a change of owner clears the set-id bits the mode may set.
bool SetAttributes(int fd, const struct stat& st, const TreeEntry& e) {
  if ((st.st_uid != e.uid || st.st_gid != e.gid) && fchown(fd, e.uid, e.gid) != 0) return false;
  return (st.st_mode & 07777) == e.mode || fchmod(fd, e.mode) == 0;
}

bool SameFile(int parent, const std::string& name, const struct stat& st, const TreeEntry& e) {
  if (!S_ISREG(st.st_mode) || static_cast<size_t>(st.st_size) != e.data.size() ||
      (st.st_mode & 07777) != e.mode || st.st_uid != e.uid || st.st_gid != e.gid) {
    return false;
  }
  Fd fd(openat(parent, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  std::string bytes(e.data.size(), '\0');
  size_t got = 0;
  while (fd.valid() && got < bytes.size()) {
    ssize_t n = read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n <= 0) break;
    got += n;
  }
  return fd.valid() && got == bytes.size() && bytes == e.data;
}

// A new file under `temporary`: whatever a failed SYNC (or the guest) left
// there is removed first, never written through (a hard link, a FIFO).
bool WriteFile(int parent, const std::string& temporary, const TreeEntry& e) {
  if (!RemoveAt(parent, temporary)) return false;
  Fd fd(openat(parent, temporary.c_str(),
               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  size_t done = 0;
  while (fd.valid() && done < e.data.size()) {
    ssize_t n = write(fd.get(), e.data.data() + done, e.data.size() - done);
    if (n <= 0) return false;
    done += n;
  }
  struct stat st;
  return fd.valid() && fstat(fd.get(), &st) == 0 && SetAttributes(fd.get(), st, e);
}

// One entry other than the top, of the pass its kind belongs to.
bool Apply(int top, const TreeEntry& e, std::string* error) {
  Fd parent = OpenDir(top, ParentOf(e.path));
  if (!parent.valid()) {
    *error = Failed("open the directory of", e.path);
    return false;
  }
  std::string name = NameOf(e.path);
  const std::string temporary = std::string(kSyncTemporary) + "new";
  struct stat st;
  bool exists = fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (e.kind == TreeEntry::kDirectory) {
    if (exists && !S_ISDIR(st.st_mode)) {
      if (!RemoveAt(parent.get(), name)) {
        *error = Failed("remove", e.path);
        return false;
      }
      exists = false;
    }
    if (!exists && mkdirat(parent.get(), name.c_str(), 0700) != 0) {
      *error = Failed("make the directory", e.path);
      return false;
    }
    Fd dir(openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir.valid() || fstat(dir.get(), &st) != 0 || !SetAttributes(dir.get(), st, e)) {
      *error = Failed("set the owner and mode of", e.path);
      return false;
    }
    return true;
  }
  if (e.kind == TreeEntry::kFile) {
    if (exists && SameFile(parent.get(), name, st, e)) return true;
    if (!WriteFile(parent.get(), temporary, e)) {
      *error = Failed("write", e.path);
      return false;
    }
  } else {
    char target[4096];
    ssize_t n = exists && S_ISLNK(st.st_mode)
                    ? readlinkat(parent.get(), name.c_str(), target, sizeof(target))
                    : -1;
    if (n >= 0 && e.data.compare(0, std::string::npos, target, n) == 0 && st.st_uid == e.uid &&
        st.st_gid == e.gid) {
      return true;
    }
    if (!RemoveAt(parent.get(), temporary) ||
        symlinkat(e.data.c_str(), parent.get(), temporary.c_str()) != 0 ||
        fchownat(parent.get(), temporary.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      *error = Failed("make the link", e.path);
      return false;
    }
  }
  // rename(2) replaces anything but a directory.
  if ((exists && S_ISDIR(st.st_mode) && !RemoveAt(parent.get(), name)) ||
      renameat(parent.get(), temporary.c_str(), parent.get(), name.c_str()) != 0) {
    *error = Failed("replace", e.path);
    return false;
  }
  return true;
}

}  // namespace

bool ApplyTree(int top, const std::vector<TreeEntry>& entries, std::string* error) {
  std::set<std::string> wanted;
  for (const TreeEntry& e : entries) wanted.insert(e.path);
  for (const TreeEntry& e : entries) {
    if (!e.path.empty()) continue;
    struct stat st;
    if (fstat(top, &st) != 0 || !SetAttributes(top, st, e)) {
      *error = Failed("set the owner and mode of", "the directory");
      return false;
    }
  }
  for (bool links : {false, true}) {
    for (const TreeEntry& e : entries) {
      if (e.path.empty() || (e.kind == TreeEntry::kLink) != links) continue;
      if (!Apply(top, e, error)) return false;
    }
  }
  for (const TreeEntry& e : entries) {
    if (e.kind != TreeEntry::kDirectory) continue;
    Fd dir = OpenDir(top, e.path);
    if (!dir.valid()) {
      *error = Failed("open", e.path.empty() ? "the directory" : e.path);
      return false;
    }
    for (const std::string& name : Names(dir.get())) {
      std::string path = e.path.empty() ? name : e.path + "/" + name;
      if (!wanted.count(path) && !RemoveAt(dir.get(), name)) {
        *error = Failed("remove", path);
        return false;
      }
    }
  }
  return true;
}

bool Sync(const SyncRequest& request, std::string* error) {
  std::string view = kSyncMounts + request.device;
  if (!MountOnce(request.device.c_str(), view, "ext4", MS_NOSUID | MS_NODEV, error)) return false;
  Fd root(open(view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  Fd top = root.valid() ? OpenDir(root.get(), request.top) : Fd();
  if (!top.valid()) {
    *error = "no directory " + request.top + " on " + request.device + ": " + strerror(errno);
    return false;
  }
  if (!ApplyTree(top.get(), request.entries, error)) {
    *error = request.top + " on " + request.device + ": " + *error;
    return false;
  }
  return true;
}

}  // namespace ember::agent
