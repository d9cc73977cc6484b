#include "src/oci/template.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "src/client/exec_client.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"
#include "src/oci/api_client.h"
#include "src/oci/network.h"

namespace ember::oci {
namespace {

constexpr uint64_t kPlaceholderBytes = 1 << 20;

// The snapshot's view of a template file: the jail's root, or the host path.
std::string InVm(bool jailed, const std::string& host_path) {
  return jailed ? host_path.substr(host_path.rfind('/')) : host_path;
}

absl::Status Expect(absl::StatusOr<int> code, const char* what, int want = 204) {
  if (!code.ok()) return code.status();
  if (*code != want) return absl::InternalError(absl::StrCat(what, " answered ", *code));
  return absl::OkStatus();
}

// "template" for the default size, else "template-<vcpus>x<mem_mib>".
std::string TemplateName(const VmSize& size) {
  if (size.vcpus == VmSize::kDefaultVcpus && size.mem_mib == VmSize::kDefaultMemMib) {
    return "template";
  }
  return "template-" + std::to_string(size.vcpus) + "x" + std::to_string(size.mem_mib);
}

}  // namespace

TemplateFiles TemplatePaths(const std::string& root, const VmSize& size) {
  TemplateFiles t;
  t.dir = root + "/" + TemplateName(size);
  t.snapshot = t.dir + "/vm.snap";
  t.memory = t.dir + "/vm.mem";
  t.agent_rootfs = t.dir + "/agent.ext4";
  t.placeholder = t.dir + "/placeholder.ext4";
  return t;
}

std::string FileStamp(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_size, " ", st.st_ino, " ", st.st_mtim.tv_sec, ".",
                      st.st_mtim.tv_nsec);
}

bool TemplateReady(const std::string& root, const VmSize& size, const std::string& agent_rootfs,
                   TemplateFiles* files) {
  *files = TemplatePaths(root, size);
  if (!agent_rootfs.empty()) {
    std::ifstream stamp(files->dir + "/agent-stamp");
    std::string made;
    if (!std::getline(stamp, made) || made != FileStamp(agent_rootfs)) return false;
  }
  // Made with the network device every container's VM has (a restore
  // points it at the container's TAP).
  if (access((files->dir + "/network").c_str(), F_OK) != 0) return false;
  std::ifstream mark(files->dir + "/jailed");
  std::string value;
  if (!(mark >> value)) return false;
  files->jailed = value == "1";
  return true;
}

absl::Status BuildTemplate(const VmAssets& assets, const std::string& root, const VmSize& size) {
  const std::string name = TemplateName(size);
  std::string work = root + "/" + name + ".new";
  RemoveTree(work);
  RETURN_IF_ERROR(MakeDirs(root, 0711));
  if (mkdir(work.c_str(), 0700) != 0) return ErrnoStatus("mkdir " + work);
  TemplateFiles t = TemplatePaths(root, size);
  TemplateFiles w = t;
  w.dir = work;
  w.snapshot = work + "/vm.snap";
  w.memory = work + "/vm.mem";
  w.agent_rootfs = work + "/agent.ext4";
  w.placeholder = work + "/placeholder.ext4";
  RETURN_IF_ERROR(LinkOrCopy(assets.rootfs, w.agent_rootfs));
  {
    int fd = open(w.placeholder.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, kPlaceholderBytes) != 0) return ErrnoStatus(w.placeholder);
    close(fd);
  }
  auto layout = PrepareLayout(assets, root, name, work);
  if (!layout.ok()) return layout.status();
  bool jailed = !layout->jail_dir.empty();
  std::string api = jailed ? layout->host_root + "/api.sock" : work + "/api.sock";
  if (jailed) {
    RETURN_IF_ERROR(LinkOrCopy(w.placeholder, layout->host_root + "/placeholder.ext4"));
    if (chown(w.placeholder.c_str(), assets.jail_uid, assets.jail_gid) != 0) {
      return ErrnoStatus("chown " + w.placeholder);
    }
  }
  // The paths the snapshot will hold: the final template's, as the VMM sees them.
  std::string config = VmConfigJson(jailed ? "/vmlinux" : assets.kernel,
                                    InVm(jailed, t.agent_rootfs), InVm(jailed, t.placeholder),
                                    jailed ? "/v.sock" : work + "/v.sock", size, kTemplateTap);
  if (!jailed) {
    // Direct: the snapshot names the final paths, which exist once renamed;
    // the boot itself reads the work copies' links, made at the final names.
    if (mkdir(t.dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + t.dir);
    RETURN_IF_ERROR(LinkOrCopy(w.agent_rootfs, t.agent_rootfs));
    RETURN_IF_ERROR(LinkOrCopy(w.placeholder, t.placeholder));
  }
  {
    std::ofstream out(layout->config);
    out << config;
    if (!out.flush()) return absl::InternalError("cannot write " + layout->config);
  }
  // Its TAP in a network namespace of its own (this process's from here
  // on), which goes with the VMM.
  if (unshare(CLONE_NEWNET) != 0) return ErrnoStatus("cannot make a network namespace");
  RETURN_IF_ERROR(MakeTap(kTemplateTap, jailed ? assets.jail_uid : geteuid(),
                          jailed ? assets.jail_gid : getegid()));
  auto vmm = StartVmm(assets, *layout, work, jailed ? "/api.sock" : api);
  if (!vmm.ok()) return vmm.status();
  auto stop = [&] {
    kill(*vmm, SIGKILL);
    waitpid(*vmm, nullptr, 0);
  };
  absl::Status status = WaitForApi(api, 30);
  if (status.ok()) {
    // The agent answers once user space is up: then snapshot.
    client::ExecOptions exec;
    exec.socket_path = layout->uds;
    exec.request.argv = {"true"};
    exec.forward_signals = {};
    exec.connect_wait_s = 1200;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    exec.stdin_fd = exec.stdout_fd = exec.stderr_fd = null;
    pid_t child = *vmm;
    exec.gave_up = [child] { return waitpid(child, nullptr, WNOHANG) == child; };
    int code = client::RunExec(exec);
    close(null);
    if (code != 0) status = absl::InternalError(absl::StrCat("the guest agent answered ", code));
    // Snapshotted once nothing else starts in the guest: every restored
    // container's first exec then runs alone.
    if (status.ok() && !WaitForConsole(work + "/console.log", kGuestSettled, 1800, exec.gave_up)) {
      status = absl::DeadlineExceededError("the guest's init never finished starting");
    }
  }
  if (status.ok()) {
    status = Expect(ApiRequest(api, "PATCH", "/vm", R"({"state": "Paused"})"), "PATCH /vm");
  }
  if (status.ok()) {
    std::string body = absl::StrCat(R"({"snapshot_path": ")", InVm(jailed, jailed ? "/vm.snap" : w.snapshot),
                                    R"(", "mem_file_path": ")",
                                    InVm(jailed, jailed ? "/vm.mem" : w.memory), R"("})");
    status = Expect(ApiRequest(api, "PUT", "/snapshot/create", body, nullptr, 300),
                    "PUT /snapshot/create");
  }
  stop();
  if (status.ok() && jailed) {
    for (const char* name : {"vm.snap", "vm.mem"}) {
      if (rename((layout->host_root + "/" + name).c_str(), (work + "/" + name).c_str()) != 0) {
        status = ErrnoStatus(absl::StrCat("move ", name));
      }
    }
  }
  if (!layout->jail_dir.empty()) RemoveTree(layout->jail_dir);
  if (!status.ok()) {
    RemoveTree(work);
    return status;
  }
  std::ofstream(work + "/agent-stamp") << FileStamp(assets.rootfs) << "\n";
  std::ofstream(work + "/network") << kTemplateTap << "\n";
  std::ofstream(work + "/jailed") << (jailed ? "1" : "0");
  for (const char* name : {"console.log", "ember.log", "vm.json"}) unlink((work + "/" + name).c_str());
  RemoveTree(t.dir);
  if (rename(work.c_str(), t.dir.c_str()) != 0) return ErrnoStatus("rename " + work);
  return absl::OkStatus();
}

absl::Status PrepareRestore(const VmLayout& layout, const TemplateFiles& t) {
  if (layout.jail_dir.empty()) return absl::OkStatus();
  for (const auto& [from, name] : {std::pair{t.agent_rootfs, "agent.ext4"},
                                   {t.placeholder, "placeholder.ext4"},
                                   {t.snapshot, "vm.snap"},
                                   {t.memory, "vm.mem"}}) {
    RETURN_IF_ERROR(LinkOrCopy(from, layout.host_root + "/" + name));
  }
  return absl::OkStatus();
}

absl::Status RestoreFromTemplate(const VmLayout& layout, const TemplateFiles& t,
                                 const std::string& api_on_host, const std::string& tap) {
  bool jailed = !layout.jail_dir.empty();
  RETURN_IF_ERROR(WaitForApi(api_on_host, 30));
  std::string load = absl::StrCat(
      R"({"snapshot_path": ")", jailed ? "/vm.snap" : t.snapshot,
      R"(", "mem_backend": {"backend_type": "File", "backend_path": ")",
      jailed ? "/vm.mem" : t.memory, R"("}, "vsock_override": {"uds_path": ")",
      jailed ? "/v.sock" : layout.uds, R"("}, "network_overrides": [{"iface_id": ")",
      kGuestInterface, R"(", "host_dev_name": ")", tap, R"("}], "resume_vm": true})");
  std::string reply;
  auto code = ApiRequest(api_on_host, "PUT", "/snapshot/load", load, &reply, 120);
  if (code.ok() && *code != 204) {
    return absl::InternalError(absl::StrCat("PUT /snapshot/load answered ", *code, ": ", reply));
  }
  RETURN_IF_ERROR(code.status());
  std::string patch = absl::StrCat(R"({"drive_id": "container", "path_on_host": ")",
                                   jailed ? "/root.ext4" : layout.image, R"("})");
  code = ApiRequest(api_on_host, "PATCH", "/drives/container", patch, &reply, 60);
  if (code.ok() && *code != 204) {
    return absl::InternalError(absl::StrCat("PATCH /drives/container answered ", *code, ": ", reply));
  }
  return code.status();
}

}  // namespace ember::oci
