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

struct TreeReader {
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

  // The entries of the open directory `dir` (at `path` in the tree).
  absl::Status Directory(int dir, const std::string& path, int depth) {
    if (depth > kMaxDepth) return absl::InvalidArgumentError(path + ": more than 64 levels deep");
    std::vector<std::string> names;
    DIR* d = fdopendir(fcntl(dir, F_DUPFD_CLOEXEC, 0));
    if (d == nullptr) return absl::InvalidArgumentError(absl::StrCat(path, ": ", strerror(errno)));
    while (dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::string at = path.empty() ? name : path + "/" + name;
      if (auto s = Entry(dir, name, at, depth); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status Entry(int parent, const std::string& name, const std::string& at, int depth) {
    struct stat st;
    if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": ", strerror(errno)));
    }
    TreeEntry e{TreeEntry::kDirectory, at, static_cast<uint32_t>(st.st_mode & 07777), st.st_uid,
                st.st_gid, ""};
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(parent, name.c_str(), target, sizeof(target) - 1);
      if (n <= 0) return absl::InvalidArgumentError(absl::StrCat(at, ": ", strerror(errno)));
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
    if (!fd.valid() || fstat(fd.get(), &now) != 0 || now.st_ino != st.st_ino) {
      return absl::UnavailableError(at + ": changed while it was read");
    }
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
    if (got != e.data.size()) return absl::UnavailableError(at + ": changed while it was read");
    return Add(std::move(e));
  }
};

// Watches every directory of the tree (inotify reports on a directory's
// own entries only); a directory already watched keeps its watch.
void Watch(int inotify, const std::string& source, const std::vector<TreeEntry>& tree) {
  constexpr uint32_t kEvents = IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE |
                               IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                               IN_DONT_FOLLOW | IN_ONLYDIR;
  for (const TreeEntry& e : tree) {
    if (e.kind != TreeEntry::kDirectory) continue;
    std::string path = e.path.empty() ? source : source + "/" + e.path;
    inotify_add_watch(inotify, path.c_str(), kEvents);
  }
}

// Waits for inotify's next events (up to `timeout_ms`, -1 forever), then
// until none has come for 100 ms (at most 2 s). False on timeout.
bool WaitForChange(int inotify, int timeout_ms) {
  pollfd p{inotify, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  char buf[16384];
  for (int quiet = 0; quiet < 20; ++quiet) {
    while (read(inotify, buf, sizeof(buf)) > 0) {
    }
    if (poll(&p, 1, 100) <= 0) break;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<TreeEntry>> ReadTree(const std::string& source) {
  Fd top(open(source.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st;
  if (!top.valid() || fstat(top.get(), &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", strerror(errno)));
  }
  TreeReader reader;
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
    auto tree = ReadTree(c.source);
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
  Fd inotify(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  std::vector<std::vector<TreeEntry>> sent;
  for (const SyncedVolume& v : volumes) sent.push_back(v.copied);
  std::vector<std::string> last_error(volumes.size());
  while (true) {
    bool retry = false;
    for (size_t i = 0; i < volumes.size(); ++i) {
      auto tree = ReadTree(volumes[i].source);
      std::string error;
      if (tree.ok()) {
        Watch(inotify.get(), volumes[i].source, *tree);
        if (sent[i] == *tree) continue;
        agent::SyncRequest request{device, volumes[i].copy, *tree};
        if (client::RunSync(connection, request, &error)) {
          sent[i] = std::move(*tree);
          last_error[i].clear();
          continue;
        }
        retry = true;
      } else {
        // Half way through an update, or gone with the pod: its next
        // change tells.
        error = std::string(tree.status().message());
        retry = absl::IsUnavailable(tree.status());
      }
      if (error != last_error[i]) {
        warn(absl::StrCat("cannot bring the copy of ", volumes[i].source,
                          " in the guest up to date: ", error));
        last_error[i] = error;
      }
    }
    WaitForChange(inotify.get(), retry ? 1000 : -1);
  }
}

}  // namespace ember::oci
