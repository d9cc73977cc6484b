#include "src/oci/vm.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"

namespace ember::oci {
namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = getenv(name);
  return v && *v ? v : fallback;
}

uint64_t tree_bytes = 0;

int AddEntry(const char*, const struct stat* st, int, FTW*) {
  tree_bytes += (static_cast<uint64_t>(st->st_size) + 4095) / 4096 * 4096;
  return 0;
}

}  // namespace

VmAssets FindAssets() {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string dir = n > 0 ? std::string(self, n) : std::string("/usr/local/bin/ember-oci");
  dir = dir.substr(0, dir.rfind('/'));
  VmAssets assets{EnvOr("EMBER_OCI_VMM", dir + "/ember"),
                  EnvOr("EMBER_OCI_KERNEL", dir + "/guest/vmlinux"),
                  EnvOr("EMBER_OCI_ROOTFS", dir + "/guest/rootfs.ext4"),
                  EnvOr("EMBER_OCI_JAILER", dir + "/ember-jailer")};
  if (assets.jailer == "none") assets.jailer.clear();
  assets.jail_uid = static_cast<uint32_t>(std::stoul(EnvOr("EMBER_OCI_JAIL_UID", "65534")));
  assets.jail_gid = static_cast<uint32_t>(std::stoul(EnvOr("EMBER_OCI_JAIL_GID", "65534")));
  return assets;
}

std::string JailId(const std::string& root, const std::string& id) {
  // FNV-1a, 64 bits: short, stable, and a jail per (root, id).
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : root + '\0' + id) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "oci-%016llx", static_cast<unsigned long long>(h));
  return buf;
}

absl::Status MakeDirs(const std::string& path, mode_t mode) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    if (mkdir(path.substr(0, pos).c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoStatus("mkdir " + path.substr(0, pos));
    }
  }
  return absl::OkStatus();
}

absl::Status LinkOrCopy(const std::string& from, const std::string& to) {
  unlink(to.c_str());
  char real[4096];
  if (!realpath(from.c_str(), real)) return ErrnoStatus("realpath " + from);
  if (link(real, to.c_str()) == 0) return absl::OkStatus();
  std::ifstream in(real, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  if (!in || !out.flush()) return absl::InternalError("cannot copy " + from + " to " + to);
  return absl::OkStatus();
}

bool WaitForConsole(const std::string& path, const std::string& text, double timeout_s,
                    const std::function<bool()>& gave_up) {
  // Reads only what was added since the last look (the guest decides how
  // much it prints), keeping the last bytes of the old for a match that
  // straddles two reads.
  std::string seen;
  off_t offset = 0;
  for (double waited = 0; waited < timeout_s; waited += 0.1) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    char buf[65536];
    ssize_t n;
    while (fd >= 0 && (n = pread(fd, buf, sizeof(buf), offset)) > 0) {
      offset += n;
      seen.append(buf, n);
      if (seen.find(text) != std::string::npos) {
        close(fd);
        return true;
      }
      seen.erase(0, seen.size() - std::min(seen.size(), text.size()));
    }
    if (fd >= 0) close(fd);
    if (gave_up && gave_up()) return false;
    usleep(100 * 1000);
  }
  return false;
}

absl::StatusOr<VmLayout> PrepareLayout(const VmAssets& assets, const std::string& root,
                                       const std::string& id, const std::string& state_dir) {
  VmLayout l;
  if (assets.jailer.empty()) {
    l.host_root = state_dir;
    l.config = l.config_in_vm = state_dir + "/vm.json";
    l.uds = state_dir + "/v.sock";
    l.image = state_dir + "/root.ext4";
    return l;
  }
  l.jail_id = JailId(root, id);
  l.chroot_base = root + "/jail";
  l.jail_dir = JailDir(assets, root, id);
  l.host_root = l.jail_dir + "/root";
  if (auto s = MakeDirs(l.host_root, 0755); !s.ok()) return s;
  if (auto s = LinkOrCopy(assets.kernel, l.host_root + "/vmlinux"); !s.ok()) return s;
  if (auto s = LinkOrCopy(assets.rootfs, l.host_root + "/agent.ext4"); !s.ok()) return s;
  l.config = l.host_root + "/vm.json";
  l.config_in_vm = "/vm.json";
  l.uds = l.host_root + "/v.sock";
  l.image = l.host_root + "/root.ext4";
  return l;
}

uint64_t TreeSize(const std::string& dir) {
  tree_bytes = 0;
  nftw(dir.c_str(), AddEntry, 64, FTW_PHYS);
  return tree_bytes;
}

absl::Status RunTool(const std::vector<std::string>& argv, std::string* output) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close_range(3, ~0U, 0);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  output->clear();
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) output->append(buf, n);
  close(out[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " failed: ", *output));
  }
  return absl::OkStatus();
}

absl::Status MakeImage(const std::string& dir, const std::string& image, uint64_t extra_bytes) {
  uint64_t bytes = TreeSize(dir) + extra_bytes;
  uint64_t mib = (bytes + bytes / 4) / (1 << 20) + 64;
  std::string messages;
  absl::Status s = RunTool({"mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d", dir,
                            image, absl::StrCat(mib, "M")},
                           &messages);
  if (!s.ok()) {
    unlink(image.c_str());
    return absl::InternalError(absl::StrCat("cannot make the container's image from ", dir,
                                            " with mke2fs: ", messages));
  }
  return absl::OkStatus();
}

std::string VmConfigJson(const std::string& kernel, const std::string& rootfs,
                         const std::string& image, const std::string& uds, const VmSize& size,
                         const std::string& tap) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("boot-source");
  w.StartObject();
  w.Key("kernel_image_path");
  w.String(kernel.c_str());
  w.Key("boot_args");
  // ember_shell: the guest's init runs busybox init, which starts the agent.
  w.String("console=ttyS0 reboot=k panic=1 pci=off ember_shell");
  w.EndObject();
  w.Key("drives");
  w.StartArray();
  auto drive = [&](const char* id, const std::string& path, bool root, bool ro) {
    w.StartObject();
    w.Key("drive_id");
    w.String(id);
    w.Key("path_on_host");
    w.String(path.c_str());
    w.Key("is_root_device");
    w.Bool(root);
    w.Key("is_read_only");
    w.Bool(ro);
    w.EndObject();
  };
  drive("agent", rootfs, true, true);
  drive("container", image, false, false);
  w.EndArray();
  w.Key("machine-config");
  w.StartObject();
  w.Key("vcpu_count");
  w.Uint(size.vcpus);
  w.Key("mem_size_mib");
  w.Uint(size.mem_mib);
  w.EndObject();
  w.Key("vsock");
  w.StartObject();
  w.Key("guest_cid");
  w.Uint(3);
  w.Key("uds_path");
  w.String(uds.c_str());
  w.EndObject();
  if (!tap.empty()) {
    w.Key("network-interfaces");
    w.StartArray();
    w.StartObject();
    w.Key("iface_id");
    w.String(kGuestInterface);
    w.Key("host_dev_name");
    w.String(tap.c_str());
    w.EndObject();
    w.EndArray();
  }
  w.EndObject();
  return buffer.GetString();
}

std::string JailDir(const VmAssets& assets, const std::string& root, const std::string& id) {
  if (assets.jailer.empty()) return "";
  std::string exec_name = assets.vmm.substr(assets.vmm.rfind('/') + 1);
  return root + "/jail/" + exec_name + "/" + JailId(root, id);
}

void RemoveJailDir(const std::string& jail_dir) {
  if (jail_dir.empty()) return;
  RemoveTree(jail_dir);
  // Its parents, once no other container's jail is in them.
  std::string parent = jail_dir.substr(0, jail_dir.rfind('/'));
  rmdir(parent.c_str());
  rmdir(parent.substr(0, parent.rfind('/')).c_str());
}

std::string ApiSocket(const std::string& jail_dir, const std::string& dir) {
  return (jail_dir.empty() ? dir : jail_dir + "/root") + "/api.sock";
}

absl::StatusOr<pid_t> StartVmm(const VmAssets& assets, const VmLayout& layout,
                               const std::string& dir, const std::string& api_in_vm,
                               const std::string& config_in_vm) {
  std::string console = dir + "/console.log", log = dir + "/ember.log";
  // Everything exec needs, built before fork.
  std::vector<std::string> args;
  if (!assets.jailer.empty()) {
    args = {assets.jailer, "--id", layout.jail_id, "--exec-file", assets.vmm,
            "--uid", std::to_string(assets.jail_uid), "--gid", std::to_string(assets.jail_gid),
            "--chroot-base-dir", layout.chroot_base, "--"};
  } else {
    args = {assets.vmm};
  }
  if (api_in_vm.empty()) {
    args.push_back("--no-api");
  } else {
    args.push_back("--api-sock");
    args.push_back(api_in_vm);
  }
  if (!config_in_vm.empty()) {
    args.push_back("--config-file");
    args.push_back(config_in_vm == "-" ? layout.config_in_vm : config_in_vm);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid != 0) return pid;
  // The child: system calls only, then exec.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);  // the monitor died before prctl
  int in = open("/dev/null", O_RDONLY);
  int out = open(console.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (in < 0 || out < 0 || err < 0 || chdir(dir.c_str()) != 0) _exit(1);
  dup2(in, 0);
  dup2(out, 1);
  dup2(err, 2);
  close_range(3, ~0U, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);  // the monitor ignores SIGPIPE
  execv(argv[0], argv.data());
  _exit(127);
}

void RemoveTree(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (d) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string child = path + "/" + name;
      struct stat st;
      if (lstat(child.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        RemoveTree(child);
      } else {
        unlink(child.c_str());
      }
    }
    closedir(d);
  }
  rmdir(path.c_str());
}

}  // namespace ember::oci
