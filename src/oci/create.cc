// `ember-oci create`: the container's image, its microVM's configuration,
// its monitor (which starts the VMM), its record, and create's hooks.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "src/jail/cgroup.h"
#include "src/oci/cgroups.h"
#include "src/oci/commands.h"
#include "src/oci/console.h"
#include "src/oci/hooks.h"
#include "src/oci/monitor.h"
#include "src/oci/mounts.h"
#include "src/oci/network.h"
#include "src/oci/request.h"
#include "src/oci/spec.h"
#include "src/oci/template.h"
#include "src/oci/vm.h"
#include "src/oci/volumes.h"

namespace ember::oci::cli {

namespace oci = ember::oci;
using ember::agent::Fd;

namespace {

// The microVM's side of a container, into `plan`: its files' layout (the
// jail), the image of its root with the bind mounts' copies, the VM's
// configuration, its TAP's name, the template it restores, and the
// read-only volumes to keep up to date.
absl::Status PrepareVm(const oci::CommandLine& cl, const std::string& id, const std::string& dir,
                       const oci::BundleSpec& spec, const oci::MountPlan& mounts,
                       oci::MonitorPlan* plan) {
  plan->assets = oci::FindAssets();
  const oci::VmAssets& assets = plan->assets;
  auto layout = oci::PrepareLayout(assets, cl.root, id, dir);
  if (!layout.ok()) return layout.status();
  plan->layout = *layout;
  if (layout->uds.size() >= 108) {
    return absl::InvalidArgumentError("path too long for the VM's socket: " + layout->uds);
  }
  // Read before they are copied: a change in between is then sent at start.
  plan->volumes = oci::VolumesToSync(
      mounts, [](const std::string& message) { logger.Write("info", message); });
  auto image_begin = std::chrono::steady_clock::now();
  if (auto s = oci::MakeImage(spec.root_path, layout->image, oci::CopiesBytes(mounts)); !s.ok()) {
    return s;
  }
  if (auto s = oci::ApplyToImage(mounts, layout->image, dir + "/binds"); !s.ok()) return s;
  logger.Write("info", absl::StrCat("image of ", spec.root_path, " made in ",
                                    Seconds(image_begin), " s"));
  bool jailed = !layout->jail_dir.empty();
  if (jailed && chown(layout->image.c_str(), assets.jail_uid, assets.jail_gid) != 0) {
    return absl::InternalError("cannot give the image to the jail's user: " +
                               std::string(strerror(errno)));
  }
  plan->tap = oci::TapName(cl.root, id);
  std::string config = oci::VmConfigJson(
      jailed ? "/vmlinux" : assets.kernel, jailed ? "/agent.ext4" : assets.rootfs,
      jailed ? "/root.ext4" : layout->image, jailed ? "/v.sock" : layout->uds, spec.vm,
      plan->tap);
  if (!WriteFileAtomic(layout->config, config)) {
    return absl::InternalError("cannot write " + layout->config);
  }
  // A container starts from the template when there is one (made in the
  // same mode) unless asked to boot cold.
  const char* boot = getenv("EMBER_OCI_BOOT");
  auto boot_annotation = spec.annotations.find("io.ember.boot");
  bool cold = (boot && std::string(boot) == "cold") ||
              (boot_annotation != spec.annotations.end() && boot_annotation->second == "cold");
  plan->restore = !cold && oci::TemplateReady(cl.root, spec.vm, assets.rootfs,
                                              &plan->template_files) &&
                  plan->template_files.jailed == jailed;
  if (plan->restore) return oci::PrepareRestore(*layout, plan->template_files);
  return absl::OkStatus();
}

}  // namespace

int Create(const oci::CommandLine& cl) {
  auto begin = std::chrono::steady_clock::now();
  const std::string& id = cl.args[0];
  if (!oci::ValidId(id)) return Error("invalid id format: " + id);
  std::string bundle = cl.Value("bundle");
  if (bundle.empty()) {
    char cwd[4096];
    bundle = getcwd(cwd, sizeof(cwd)) ? cwd : ".";
  }
  auto fail = [&](const std::string& why) { return Error("ember-oci create failed: " + why); };
  auto spec = oci::LoadBundle(bundle);
  if (!spec.ok()) return fail(std::string(spec.status().message()));
  auto mounts = oci::PlanMounts(spec->mounts);
  if (!mounts.ok()) return fail(std::string(mounts.status().message()));
  agent::ExecRequest request = oci::ContainerRequest(spec->process, spec->hostname, mounts->guest);
  request.container.root_readonly = spec->root_readonly;
  request.flags |= agent::ExecRequest::kFlagInit;
  if (auto s = oci::CheckRequest(request); !s.ok()) return fail(std::string(s.message()));
  std::optional<jail::CgroupPlacement> cgroup;
  if (!spec->cgroups_path.empty()) {
    auto planned = oci::PlanCgroup(spec->cgroups_path, spec->resources, jail::HostCgroupVersion());
    if (!planned.ok()) return fail(std::string(planned.status().message()));
    cgroup = std::move(*planned);
  }
  std::string console_socket = cl.Value("console-socket");
  if (spec->process.terminal && console_socket.empty()) {
    return fail("cannot allocate tty if ember-oci will detach without setting console socket");
  }
  if (!spec->process.terminal && !console_socket.empty()) {
    return fail("cannot use console socket if ember-oci will not allocate tty");
  }
  for (size_t pos = 1; pos <= cl.root.size(); ++pos) {  // mkdir -p: the shim adds a namespace
    if (pos == cl.root.size() || cl.root[pos] == '/') mkdir(cl.root.substr(0, pos).c_str(), 0711);
  }
  std::string dir = Dir(cl, id);
  if (mkdir(dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) return fail("container with given ID already exists");
    return fail("cannot make " + dir + ": " + strerror(errno));
  }
  Fd lock = LockContainer(cl, id);
  // From here on a failure removes what was made.
  auto undo = [&](const std::string& why) {
    oci::RemoveTree(dir);
    return fail(why);
  };
  // After the checks above, as in runc, where the container's init looks
  // for it before it waits for `start`.
  if (auto s = oci::FindProgram(request, spec->root_path); !s.ok()) {
    return undo(std::string(s.message()));
  }
  oci::MonitorPlan plan;
  auto undo_all = [&](const std::string& why) {
    if (!plan.layout.jail_dir.empty()) oci::RemoveTree(plan.layout.jail_dir);
    return undo(why);
  };
  // A pod's sandbox runs no microVM (docs/containers.md, "Pods").
  plan.sandbox = oci::IsPodSandbox(spec->annotations, id);
  if (!plan.sandbox) {
    if (auto s = PrepareVm(cl, id, dir, *spec, *mounts, &plan); !s.ok()) {
      return undo_all(std::string(s.message()));
    }
  }
  std::string fifo = dir + "/exec.fifo";
  if (mkfifo(fifo.c_str(), 0600) != 0) {
    return undo_all("mkfifo: " + std::string(strerror(errno)));
  }
  Fd fifo_r(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fifo_r.valid()) return undo_all("cannot open " + fifo);

  oci::Pty pty;
  if (spec->process.terminal) {
    if (auto s = oci::OpenPty(&pty); !s.ok()) return undo_all(std::string(s.message()));
    if (auto s = oci::SendConsole(console_socket, pty.master.get(), pty.name); !s.ok()) {
      return undo_all(std::string(s.message()));
    }
    pty.master.reset();
  }
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return undo_all("pipe: " + std::string(strerror(errno)));
  Fd ready_r(ready[0]), ready_w(ready[1]);

  plan.exec.socket_path = plan.layout.uds;
  plan.exec.request = std::move(request);
  plan.tty_slave = pty.slave.get();
  plan.owns_vm = !plan.sandbox;
  plan.dir = dir;
  plan.start_fifo = fifo_r.get();
  plan.ready_fd = ready_w.get();
  plan.warn = [](const std::string& message) { logger.Write("warning", message); };
  pid_t monitor = fork();
  if (monitor < 0) return undo_all("fork: " + std::string(strerror(errno)));
  if (monitor == 0) {
    lock.reset();  // the lock is create's, not the monitor's to keep
    auto give_up = [&](absl::string_view why) {
      uint32_t none = 0;
      (void)!write(ready_w.get(), &none, sizeof(none));
      (void)!write(ready_w.get(), why.data(), why.size());
      _exit(1);
    };
    // The monitor, and the VMM it starts, join the container's network
    // namespace (a new one unless config.json names one), so that hooks
    // entering the container's namespaces by its pid reach that one; this
    // process stays in the runtime's, where prestart and createRuntime
    // hooks run. And the container's cgroup, before the VMM starts.
    if (auto s = oci::JoinNetworkNamespace(spec->network_namespace); !s.ok()) give_up(s.message());
    // process.oomScoreAdj, as runc sets it for the container's init: here
    // for the monitor and the VMM it starts, which holds the guest.
    if (spec->process.oom_score_adj) {
      std::string value = std::to_string(*spec->process.oom_score_adj);
      Fd adj(open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC));
      if (!adj.valid() || write(adj.get(), value.data(), value.size()) < 0) {
        give_up(absl::StrCat("cannot set oom_score_adj to ", value, ": ", strerror(errno)));
      }
    }
    if (cgroup) {
      if (auto s = jail::JoinCgroup(*cgroup, getpid()); !s.ok()) {
        give_up(absl::StrCat("cannot join the container's cgroup: ", s.message()));
      }
    }
    oci::RunMonitor(std::move(plan));
  }
  ready_w.reset();
  // Recorded at once: a create killed from here on (the shim's context
  // ends) leaves a container that `delete` can stop and remove.
  oci::ContainerRecord record;
  record.id = id;
  record.bundle = bundle;
  record.rootfs = spec->root_path;
  record.created = oci::NowRfc3339();
  record.monitor = oci::RefOf(monitor);
  record.annotations = spec->annotations;
  // Decided here for the container's life, whatever a later ember-oci
  // would decide.
  record.sandbox = plan.sandbox;
  record.jail_dir = plan.layout.jail_dir;
  record.uds = plan.layout.uds;
  // The namespace the monitor joined when config.json names one (not the
  // host's: JoinNetworkNamespace makes one of its own then).
  if (spec->network_namespace && !spec->network_namespace->empty() &&
      !oci::IsHostNetworkNamespace(*spec->network_namespace)) {
    record.netns = *spec->network_namespace;
  }
  if (cgroup) {
    record.cgroup = cgroup->relative;
    record.cgroup_version = cgroup->version;
  }
  Save(cl, record);
  uint32_t vmm = 0;
  std::string tap = oci::TapName(cl.root, id);
  // Undoes the processes and the cgroup; the files are undo_all's.
  auto stop = [&] {
    kill(monitor, SIGKILL);
    if (vmm != 0) kill(static_cast<pid_t>(vmm), SIGKILL);
    waitpid(monitor, nullptr, 0);
    oci::ProcessRef vmm_ref = oci::RefOf(static_cast<pid_t>(vmm));
    for (int i = 0; vmm != 0 && i < 250 && oci::Alive(vmm_ref); ++i) usleep(20 * 1000);
    // A pod's namespace outlives this container: its TAP must not.
    if (!record.netns.empty()) oci::RemoveTapIn(record.netns, tap);
    if (cgroup) jail::LeaveCgroup(cgroup->version, cgroup->relative, oci::ContainerControllers());
  };
  if (read(ready_r.get(), &vmm, sizeof(vmm)) != sizeof(vmm) || vmm == 0) {
    char why[1024];
    ssize_t n = read(ready_r.get(), why, sizeof(why));
    vmm = 0;
    stop();
    bool jailed = !plan.layout.jail_dir.empty();
    return undo_all("cannot start " +
                    (plan.sandbox ? "the pod's sandbox"
                                  : jailed ? plan.assets.jailer : plan.assets.vmm) +
                    (n > 0 ? ": " + std::string(why, n) : std::string()));
  }
  if (!plan.sandbox) record.vmm = oci::RefOf(static_cast<pid_t>(vmm));
  if (!Save(cl, record)) {
    stop();
    return undo_all("cannot write the container's state");
  }
  // The hooks of create's moments, once the VMM runs; kept for start and
  // delete (the bundle may be gone by then). createContainer's run in the
  // container's network namespace, the others in the runtime's.
  oci::Hooks hooks = oci::ParseHooks(spec->hooks_json).value_or(oci::Hooks{});  // checked
  std::string state = oci::OciStateJson(record, oci::Status::kCreating, false);
  absl::Status hooked;
  for (auto [list, phase] : {std::pair{&hooks.prestart, "prestart"},
                             {&hooks.create_runtime, "createRuntime"},
                             {&hooks.create_container, "createContainer"}}) {
    if (hooked.ok() && list == &hooks.create_container && !list->empty()) {
      hooked = oci::JoinNamespaceOf(monitor);
    }
    if (hooked.ok()) hooked = oci::RunHooks(*list, state, phase);
  }
  if (hooked.ok() && !hooks.empty() && !WriteFileAtomic(dir + "/hooks.json", spec->hooks_json)) {
    hooked = absl::InternalError("cannot write " + dir + "/hooks.json");
  }
  if (!hooked.ok()) {
    stop();
    return undo_all(std::string(hooked.message()));
  }
  if (!WritePidFile(cl.Value("pid-file"), monitor)) {
    stop();
    return undo_all("cannot write the pid file");
  }
  logger.Write("info", absl::StrCat("created ", id,
                                    plan.sandbox   ? " (a pod's sandbox: no microVM)"
                                    : plan.restore ? " from the template"
                                                   : " (cold boot)",
                                    " in ", Seconds(begin), " s"));
  return 0;
}

}  // namespace ember::oci::cli
