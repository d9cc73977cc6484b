#include "src/jail/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"

namespace ember::jail {
namespace {

// No owner beyond root: for directories the jail's user must not own.
constexpr uid_t kNoOtherOwner = static_cast<uid_t>(-1);

std::string Join(const std::string& dir, absl::string_view name) {
  return dir == "/" ? absl::StrCat("/", name) : absl::StrCat(dir, "/", name);
}

// Whether the directory at `path` is safe to build a jail through: owned
// by root (or `also_owner`) and writable by nobody else, unless sticky
// (then others cannot rename or remove what they do not own).
absl::Status CheckDir(const std::string& path, const struct stat& st, uid_t also_owner) {
  if (st.st_uid != 0 && st.st_uid != geteuid() && st.st_uid != also_owner) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is owned by uid ", st.st_uid,
        ", not root; refusing to build a jail through it (its owner could swap its entries)"));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is writable by ", (st.st_mode & S_IWOTH) ? "everyone" : "its group",
        absl::StrFormat(" (mode %04o)", st.st_mode & 07777),
        " without the sticky bit; refusing to build a jail through it (another user could "
        "swap its entries)"));
  }
  return absl::OkStatus();
}

// Opens directory `name` in `dir` (at `dir_path`, for messages), making it
// with `mode` if it is missing; never through a symlink, and only if
// CheckDir accepts it.
absl::StatusOr<UniqueFd> OpenDir(int dir, const std::string& dir_path, const std::string& name,
                                 mode_t mode, uid_t also_owner) {
  const std::string path = Join(dir_path, name);
  if (mkdirat(dir, name.c_str(), mode) != 0 && errno != EEXIST) return ErrnoStatus(path);
  UniqueFd fd(openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    struct stat st;
    if (fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is ", S_ISLNK(st.st_mode) ? "a symlink" : "not a directory",
                       "; refusing to build a jail through it"));
    }
    return ErrnoStatus(path, err);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(path);
  RETURN_IF_ERROR(CheckDir(path, st, also_owner));
  return fd;
}

// Copies `from` to `name` in `dir` (at `dir_path`).
absl::Status CopyExecFile(const std::string& from, int dir, const std::string& dir_path,
                          const std::string& name) {
  const std::string to = Join(dir_path, name);
  struct stat st;
  if (fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          to, " exists as ", S_ISLNK(st.st_mode) ? "a symlink" : "a hard link or special file",
          "; refusing to copy the exec file over it"));
    }
    if (unlinkat(dir, name.c_str(), 0) != 0) return ErrnoStatus(to);
  }
  UniqueFd in(open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in.valid()) return ErrnoStatus(from);
  if (fstat(in.get(), &st) != 0) return ErrnoStatus(from);
  UniqueFd out(openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      0755));
  if (!out.valid()) return ErrnoStatus(to);
  for (off_t done = 0; done < st.st_size;) {
    ssize_t n = sendfile(out.get(), in.get(), nullptr, st.st_size - done);
    if (n <= 0) return ErrnoStatus(absl::StrCat("copying ", from, " to ", to), n < 0 ? errno : EIO);
    done += n;
  }
  return absl::OkStatus();
}

bool SameFile(int a, int b) {
  struct stat sa, sb;
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

void SanitizeProcess() {
  syscall(SYS_close_range, 3, ~0u, 0);
  clearenv();
}

absl::StatusOr<JailDirs> CreateJail(const JailerArgs& args) {
  std::string path = "/";
  UniqueFd dir(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return ErrnoStatus("/");
  struct stat st;
  if (fstat(dir.get(), &st) != 0) return ErrnoStatus("/");
  RETURN_IF_ERROR(CheckDir(path, st, kNoOtherOwner));
  std::vector<std::string> parts = absl::StrSplit(args.chroot_base_dir, '/', absl::SkipEmpty());
  parts.push_back(args.exec_name);
  parts.push_back(args.id);
  for (const std::string& part : parts) {
    ASSIGN_OR_RETURN(UniqueFd next, OpenDir(dir.get(), path, part, 0755, kNoOtherOwner));
    dir = std::move(next);
    path = Join(path, part);
  }
  JailDirs jail;
  // The root may be the jail user's already: an earlier jail with this id.
  ASSIGN_OR_RETURN(jail.root, OpenDir(dir.get(), path, "root", 0755, args.uid));
  jail.id_dir = std::move(dir);
  path = Join(path, "root");
  RETURN_IF_ERROR(CopyExecFile(args.exec_file, jail.root.get(), path, args.exec_name));
  // The VMM creates its API socket and other files in its root.
  if (fchown(jail.root.get(), args.uid, args.gid) != 0) return ErrnoStatus(path);
  return jail;
}

absl::Status JoinNetns(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("--netns ", path));
  if (setns(fd.get(), CLONE_NEWNET) != 0) return ErrnoStatus(absl::StrCat("joining ", path));
  return absl::OkStatus();
}

absl::Status SetResourceLimits(const JailerArgs& args) {
  for (const auto& [resource, value] : args.resource_limits) {
    rlimit limit = {value, value};
    if (setrlimit(resource, &limit) != 0) {
      return ErrnoStatus(absl::StrCat("--resource-limit ",
                                      resource == RLIMIT_FSIZE ? "fsize=" : "no-file=", value));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DeviceNode>> HostDevices() {
  const std::pair<const char*, bool> kNodes[] = {
      {"/dev/kvm", true}, {"/dev/net/tun", true}, {"/dev/urandom", true},
      {"/dev/userfaultfd", false}};
  std::vector<DeviceNode> nodes;
  for (const auto& [path, required] : kNodes) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISCHR(st.st_mode)) {
      if (required) return ErrnoStatus(absl::StrCat("the host's ", path), errno ? errno : ENODEV);
      continue;
    }
    nodes.push_back({path, st.st_rdev, required});
  }
  return nodes;
}

absl::Status PivotIntoJail(const JailDirs& jail) {
  // The fds name the host namespace's mounts; the working directory is
  // carried into the new namespace. From the id directory (which only
  // root may change, CreateJail checked) the jail root is "root".
  if (fchdir(jail.id_dir.get()) != 0) return ErrnoStatus("entering the jail's directory");
  if (unshare(CLONE_NEWNS) != 0) return ErrnoStatus("unshare(CLONE_NEWNS)");
  // Nothing mounted in the jail leaks back to the host.
  if (mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    return ErrnoStatus("making / a slave mount");
  }
  // pivot_root needs the new root to be a mount point.
  if (mount("root", "root", nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return ErrnoStatus("bind-mounting the jail root");
  }
  UniqueFd root(open("root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) return ErrnoStatus("the jail root, mounted");
  if (!SameFile(root.get(), jail.root.get())) {
    return absl::FailedPreconditionError("the jail root changed while the jail was built");
  }
  if (fchdir(root.get()) != 0) return ErrnoStatus("entering the jail root");
  RETURN_IF_ERROR(OpenDir(root.get(), "/", "old_root", 0700, kNoOtherOwner).status());
  if (syscall(SYS_pivot_root, ".", "old_root") != 0) return ErrnoStatus("pivot_root");
  if (chdir("/") != 0) return ErrnoStatus("chdir /");
  if (umount2("old_root", MNT_DETACH) != 0) return ErrnoStatus("detaching the host's tree");
  if (rmdir("old_root") != 0) return ErrnoStatus("rmdir old_root");
  return absl::OkStatus();
}

absl::Status MakeDevices(const std::vector<DeviceNode>& nodes, uid_t uid, gid_t gid) {
  // The jail's root is the jail user's (CreateJail): what is in it may be
  // left from an earlier VMM, so nothing here follows a symlink.
  UniqueFd root(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return ErrnoStatus("/");
  ASSIGN_OR_RETURN(UniqueFd dev, OpenDir(root.get(), "/", "dev", 0755, uid));
  ASSIGN_OR_RETURN(UniqueFd net, OpenDir(dev.get(), "/dev", "net", 0755, uid));
  ASSIGN_OR_RETURN(UniqueFd run, OpenDir(root.get(), "/", "run", 0755, uid));
  if (fchown(dev.get(), uid, gid) != 0) return ErrnoStatus("/dev");
  if (fchown(net.get(), uid, gid) != 0) return ErrnoStatus("/dev/net");
  if (fchown(run.get(), uid, gid) != 0) return ErrnoStatus("/run");
  for (const DeviceNode& node : nodes) {
    const size_t slash = node.path.rfind('/');
    const std::string dir_path = node.path.substr(0, slash);
    const std::string name = node.path.substr(slash + 1);
    int dir = dir_path == "/dev" ? dev.get() : dir_path == "/dev/net" ? net.get() : -1;
    if (dir < 0) return absl::InternalError(absl::StrCat("no directory for ", node.path));
    unlinkat(dir, name.c_str(), 0);
    if (mknodat(dir, name.c_str(), S_IFCHR | 0600, node.rdev) != 0) {
      return ErrnoStatus(absl::StrCat("mknod ", node.path));
    }
    if (fchownat(dir, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus(node.path);
    }
  }
  return absl::OkStatus();
}

absl::Status StdioToNull(int null_fd) {
  for (int fd = 0; fd <= 2; fd++) {
    if (dup2(null_fd, fd) < 0) return ErrnoStatus("dup2 /dev/null");
  }
  return absl::OkStatus();
}

absl::Status WritePidFile(int dir, const std::string& name, pid_t pid) {
  // The jail root is the VMM user's: what is there may be anything.
  if (unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) return ErrnoStatus(name);
  UniqueFd fd(openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0644));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("creating ", name));
  const std::string text = std::to_string(pid);
  if (write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoStatus(absl::StrCat("writing ", name));
  }
  return absl::OkStatus();
}

absl::Status DropPrivileges(uid_t uid, gid_t gid) {
  if (setgroups(0, nullptr) != 0) return ErrnoStatus("setgroups");
  if (setresgid(gid, gid, gid) != 0) return ErrnoStatus(absl::StrCat("setresgid ", gid));
  if (setresuid(uid, uid, uid) != 0) return ErrnoStatus(absl::StrCat("setresuid ", uid));
  return absl::OkStatus();
}

}  // namespace ember::jail
