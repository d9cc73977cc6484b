#include "src/oci/volumes.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/agent/fd.h"

namespace ember::oci {
namespace {

using agent::Fd;
using agent::TreeEntry;

// Room in a SYNC for its device's and directory's names.
constexpr size_t kTreeBudget = agent::kMaxSyncPayload - 8192;
constexpr int kMaxDepth = 64;
// How often the volumes are read again without a change reported (a
// safety net for events lost to a race, or no inotify at all), and the
// first retry of a failed SYNC.
constexpr int kRescanMs = 30 * 1000;
constexpr int kFirstRetryMs = 1000;

constexpr uint32_t kWatchEvents = IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB |
                                   IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
                                   IN_DELETE_SELF | IN_MOVE_SELF | IN_DONT_FOLLOW | IN_ONLYDIR;

absl::Status Changed(const std::string& at) {
  return absl::UnavailableError(at + ": changed while it was read");
}

using Listing = std::vector<std::pair<std::string, ino_t>>;

// A directory's entries: name and inode (a rename over a name changes it).
// An error rather than a short list: what the list lacks, the guest's copy
// would lose.
absl::StatusOr<Listing> List(int dir, const std::string& path) {
  Listing names;
  DIR* d = fdopendir(fcntl(dir, F_DUPFD_CLOEXEC, 0));
  if (d == nullptr) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot list: ", strerror(errno)));
  }
  rewinddir(d);  // the duplicate shares the offset of an earlier listing
  errno = 0;
  while (dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      names.emplace_back(e->d_name, e->d_ino);
    }
  }
  int error = errno;
  closedir(d);
  if (error != 0) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot list: ", strerror(error)));
  }
  std::sort(names.begin(), names.end());
  return names;
}

struct TreeReader {
  std::string source;
  int inotify = -1;  // watches each directory before it is read, when >= 0
  std::vector<TreeEntry> entries;
  size_t bytes = 0;

  static absl::Status TooLarge() {
    return absl::ResourceExhaustedError(absl::StrCat("more than ",
                                                     agent::SyncRequest::kMaxEntries,
                                                     " entries or ", kTreeBudget / 1024, " KiB"));
  }

  absl::Status Add(TreeEntry e) {
    bytes += 21 + e.path.size() + e.data.size();  // as EncodeSync lays it out
    if (entries.size() >= agent::SyncRequest::kMaxEntries || bytes > kTreeBudget) {
      return TooLarge();
    }
    entries.push_back(std::move(e));
    return absl::OkStatus();
  }

  // The entries of the open directory `dir` (at `path` in the tree). Its
  // listing is taken again afterwards: a writer's step in between (a new
  // version's directory filled, `..data` renamed over) makes the read
  // Unavailable, to be taken again, rather than half of one version.
  absl::Status Directory(int dir, const std::string& path, int depth) {
    if (depth > kMaxDepth) return absl::InvalidArgumentError(path + ": more than 64 levels deep");
    if (inotify >= 0) {
      inotify_add_watch(inotify, (path.empty() ? source : source + "/" + path).c_str(),
                        kWatchEvents);
    }
    std::string where = path.empty() ? "." : path;
    auto names = List(dir, where);
    if (!names.ok()) return names.status();
    for (const auto& [name, inode] : *names) {
      std::string at = path.empty() ? name : path + "/" + name;
      if (auto s = Entry(dir, name, at, depth); !s.ok()) return s;
    }
    auto again = List(dir, where);
    if (!again.ok()) return again.status();
    if (*again != *names) return Changed(where);
    return absl::OkStatus();
  }

  absl::Status Entry(int parent, const std::string& name, const std::string& at, int depth) {
    struct stat st;
    if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno == ENOENT ? Changed(at)
                             : absl::InvalidArgumentError(absl::StrCat(at, ": ", strerror(errno)));
    }
    TreeEntry e{TreeEntry::kDirectory, at, static_cast<uint32_t>(st.st_mode & 07777), st.st_uid,
                st.st_gid, ""};
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(parent, name.c_str(), target, sizeof(target) - 1);
      if (n <= 0) return Changed(at);
      e.kind = TreeEntry::kLink;
      e.mode = 0;
      e.data.assign(target, n);
      return Add(std::move(e));
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(at + ": not a file, directory or symbolic link");
    }
    Fd fd(openat(parent, name.c_str(),
                 O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
                     (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0)));
    struct stat now;
    if (!fd.valid() || fstat(fd.get(), &now) != 0 || now.st_ino != st.st_ino) return Changed(at);
    if (S_ISDIR(st.st_mode)) {
      if (auto s = Add(std::move(e)); !s.ok()) return s;
      return Directory(fd.get(), at, depth + 1);
    }
    if (static_cast<uint64_t>(st.st_size) > kTreeBudget - bytes) return TooLarge();
    e.kind = TreeEntry::kFile;
    e.data.resize(st.st_size);
    size_t got = 0;
    while (got < e.data.size()) {
      ssize_t n = read(fd.get(), e.data.data() + got, e.data.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += n;
    }
    // Written to meanwhile: its size or time tells.
    if (got != e.data.size() || fstat(fd.get(), &now) != 0 || now.st_size != st.st_size ||
        now.st_mtim.tv_sec != st.st_mtim.tv_sec || now.st_mtim.tv_nsec != st.st_mtim.tv_nsec) {
      return Changed(at);
    }
    return Add(std::move(e));
  }
};

// The tree, read again while a writer's steps keep changing it under the
// read (at most 20 times, 50 ms apart).
absl::StatusOr<std::vector<TreeEntry>> ReadSettledTree(const std::string& source, int inotify) {
  absl::StatusOr<std::vector<TreeEntry>> tree;
  for (int i = 0; i < 20; ++i) {
    if (i > 0) usleep(50 * 1000);
    tree = ReadTree(source, inotify);
    if (!absl::IsUnavailable(tree.status())) break;
  }
  return tree;
}

// Waits up to `timeout_ms` for inotify's events, then until none has come
// for 100 ms (at most 2 s). Without inotify, only the time.
void WaitForChange(int inotify, int timeout_ms) {
  if (inotify < 0) {
    usleep(timeout_ms * 1000);
    return;
  }
  pollfd p{inotify, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return;
  char buf[16384];
  for (int quiet = 0; quiet < 20; ++quiet) {
    while (read(inotify, buf, sizeof(buf)) > 0) {
    }
    if (poll(&p, 1, 100) <= 0) break;
  }
}

}  // namespace

absl::StatusOr<std::vector<TreeEntry>> ReadTree(const std::string& source, int inotify) {
  Fd top(open(source.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st;
  if (!top.valid() || fstat(top.get(), &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", strerror(errno)));
  }
  TreeReader reader{source, inotify};
  absl::Status s = reader.Add({TreeEntry::kDirectory, "", static_cast<uint32_t>(st.st_mode & 07777),
                               st.st_uid, st.st_gid, ""});
  if (s.ok()) s = reader.Directory(top.get(), "", 0);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(source, ": ", s.message()));
  return std::move(reader.entries);
}

std::vector<SyncedVolume> VolumesToSync(
    const MountPlan& plan, const std::function<void(const std::string&)>& skipped) {
  std::vector<SyncedVolume> volumes;
  for (const MountPlan::Copy& c : plan.copies) {
    auto m = std::find_if(plan.guest.begin(), plan.guest.end(),
                          [&](const agent::MountSpec& g) { return g.source == c.copy; });
    struct stat st;
    if (m == plan.guest.end() || !(m->flags & MS_RDONLY) || stat(c.source.c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
      continue;
    }
    auto tree = ReadSettledTree(c.source, -1);
    if (!tree.ok()) {
      skipped(absl::StrCat("the read-only bind mount at ", m->target,
                           " is a copy the host's changes do not reach: ", tree.status().message()));
      continue;
    }
    volumes.push_back({c.source, c.copy, std::move(*tree)});
  }
  return volumes;
}

void RunVolumeSync(const std::vector<SyncedVolume>& volumes, const std::string& device,
                   client::ExecOptions connection,
                   const std::function<void(const std::string&)>& warn) {
  // Without an inotify instance (a user's are limited: 128 by default),
  // the volumes are only read again every rescan.
  Fd inotify(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify.valid()) {
    warn(absl::StrCat("no inotify instance (", strerror(errno),
                      "): the read-only bind mounts follow their sources every ",
                      kRescanMs / 1000, " s only"));
  }
  std::vector<std::vector<TreeEntry>> sent;
  for (const SyncedVolume& v : volumes) sent.push_back(v.copied);
  std::vector<std::string> last_error(volumes.size());
  int backoff_ms = kFirstRetryMs;
  while (true) {
    bool failed = false;
    for (size_t i = 0; i < volumes.size(); ++i) {
      auto tree = ReadSettledTree(volumes[i].source, inotify.get());
      std::string error;
      if (tree.ok()) {
        if (sent[i] == *tree) continue;
        agent::SyncRequest request{device, volumes[i].copy, *tree};
        if (client::RunSync(connection, request, &error)) {
          sent[i] = std::move(*tree);
          last_error[i].clear();
          continue;
        }
        failed = true;
      } else {
        // Too large now, or gone with the pod: the next change or rescan
        // tells.
        error = std::string(tree.status().message());
      }
      if (error != last_error[i]) {
        warn(absl::StrCat("cannot bring the copy of ", volumes[i].source,
                          " in the guest up to date: ", error));
        last_error[i] = error;
      }
    }
    // A failed SYNC is tried again sooner than the rescan, less and less
    // often while it keeps failing (a full disk in the guest, say).
    int wait_ms = failed ? backoff_ms : kRescanMs;
    backoff_ms = failed ? std::min(backoff_ms * 2, kRescanMs) : kFirstRetryMs;
    WaitForChange(inotify.get(), wait_ms);
  }
}

}  // namespace ember::oci
