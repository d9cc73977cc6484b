#include "src/oci/vm.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
  return {EnvOr("EMBER_OCI_VMM", dir + "/ember"),
          EnvOr("EMBER_OCI_KERNEL", dir + "/guest/vmlinux"),
          EnvOr("EMBER_OCI_ROOTFS", dir + "/guest/rootfs.ext4")};
}

uint64_t TreeSize(const std::string& dir) {
  tree_bytes = 0;
  nftw(dir.c_str(), AddEntry, 64, FTW_PHYS);
  return tree_bytes;
}

absl::Status MakeImage(const std::string& dir, const std::string& image) {
  uint64_t bytes = TreeSize(dir);
  uint64_t mib = (bytes + bytes / 4) / (1 << 20) + 64;
  std::string size = absl::StrCat(mib, "M");
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close_range(3, ~0U, 0);
    execlp("mke2fs", "mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d",
           dir.c_str(), image.c_str(), size.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string messages;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) messages.append(buf, n);
  close(out[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    unlink(image.c_str());
    return absl::InternalError(absl::StrCat("cannot make the container's image from ", dir,
                                            " with mke2fs: ", messages));
  }
  return absl::OkStatus();
}

std::string VmConfigJson(const VmAssets& assets, const std::string& image, const std::string& uds,
                         const VmSize& size) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("boot-source");
  w.StartObject();
  w.Key("kernel_image_path");
  w.String(assets.kernel.c_str());
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
  drive("agent", assets.rootfs, true, true);
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
  w.EndObject();
  return buffer.GetString();
}

absl::StatusOr<pid_t> StartVmm(const VmAssets& assets, const std::string& dir,
                               const std::string& config) {
  std::string console = dir + "/console.log", log = dir + "/ember.log";
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
  execl(assets.vmm.c_str(), assets.vmm.c_str(), "--no-api", "--config-file", config.c_str(),
        static_cast<char*>(nullptr));
  _exit(127);
}

}  // namespace ember::oci
