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
#include "absl/strings/str_split.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"

namespace ember::jail {
namespace {

// mkdir that accepts an existing directory but never a symlink.
absl::Status MakeRealDir(const std::string& path, mode_t mode) {
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return ErrnoStatus(path);
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return ErrnoStatus(path);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is ", S_ISLNK(st.st_mode) ? "a symlink" : "not a directory",
                     "; refusing to build a jail through it"));
  }
  return absl::OkStatus();
}

absl::Status CopyExecFile(const std::string& from, const std::string& to) {
  struct stat st;
  if (lstat(to.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          to, " exists as ", S_ISLNK(st.st_mode) ? "a symlink" : "a hard link or special file",
          "; refusing to copy the exec file over it"));
    }
    if (unlink(to.c_str()) != 0) return ErrnoStatus(to);
  }
  UniqueFd in(open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in.valid()) return ErrnoStatus(from);
  if (fstat(in.get(), &st) != 0) return ErrnoStatus(from);
  UniqueFd out(open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755));
  if (!out.valid()) return ErrnoStatus(to);
  for (off_t done = 0; done < st.st_size;) {
    ssize_t n = sendfile(out.get(), in.get(), nullptr, st.st_size - done);
    if (n <= 0) return ErrnoStatus(absl::StrCat("copying ", from, " to ", to), n < 0 ? errno : EIO);
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace

void SanitizeProcess() {
  syscall(SYS_close_range, 3, ~0u, 0);
  clearenv();
}

absl::Status CreateJail(const JailerArgs& args) {
  std::string path;
  for (absl::string_view part : absl::StrSplit(args.chroot_base_dir.substr(1), '/')) {
    absl::StrAppend(&path, "/", part);
    RETURN_IF_ERROR(MakeRealDir(path, 0755));
  }
  for (const std::string& part : {args.exec_name, args.id, std::string("root")}) {
    absl::StrAppend(&path, "/", part);
    RETURN_IF_ERROR(MakeRealDir(path, 0755));
  }
  RETURN_IF_ERROR(CopyExecFile(args.exec_file, absl::StrCat(path, "/", args.exec_name)));
  // The VMM creates its API socket and other files in its root.
  if (chown(path.c_str(), args.uid, args.gid) != 0) return ErrnoStatus(path);
  return absl::OkStatus();
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

absl::Status PivotIntoJail(const std::string& root) {
  if (unshare(CLONE_NEWNS) != 0) return ErrnoStatus("unshare(CLONE_NEWNS)");
  // Nothing mounted in the jail leaks back to the host.
  if (mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    return ErrnoStatus("making / a slave mount");
  }
  // pivot_root needs the new root to be a mount point.
  if (mount(root.c_str(), root.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return ErrnoStatus(absl::StrCat("bind-mounting ", root));
  }
  if (chdir(root.c_str()) != 0) return ErrnoStatus(root);
  RETURN_IF_ERROR(MakeRealDir("old_root", 0700));
  if (syscall(SYS_pivot_root, ".", "old_root") != 0) return ErrnoStatus("pivot_root");
  if (chdir("/") != 0) return ErrnoStatus("chdir /");
  if (umount2("old_root", MNT_DETACH) != 0) return ErrnoStatus("detaching the host's tree");
  if (rmdir("old_root") != 0) return ErrnoStatus("rmdir old_root");
  return absl::OkStatus();
}

absl::Status MakeDevices(const std::vector<DeviceNode>& nodes, uid_t uid, gid_t gid) {
  for (const char* dir : {"/dev", "/dev/net", "/run"}) {
    RETURN_IF_ERROR(MakeRealDir(dir, 0755));
    if (chown(dir, uid, gid) != 0) return ErrnoStatus(dir);
  }
  for (const DeviceNode& node : nodes) {
    unlink(node.path.c_str());
    if (mknod(node.path.c_str(), S_IFCHR | 0600, node.rdev) != 0) {
      return ErrnoStatus(absl::StrCat("mknod ", node.path));
    }
    if (chown(node.path.c_str(), uid, gid) != 0) return ErrnoStatus(node.path);
  }
  return absl::OkStatus();
}

absl::Status Daemonize(int null_fd) {
  if (setsid() < 0) return ErrnoStatus("setsid");
  for (int fd = 0; fd <= 2; fd++) {
    if (dup2(null_fd, fd) < 0) return ErrnoStatus("dup2 /dev/null");
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
