// ember-oci: an OCI runtime with runc's command line, so that containerd's
// runc shim (containerd-shim-runc-v2, BinaryName or `ctr run
// --runc-binary`) runs each container's process in an Ember microVM.
//
//   ember-oci [--root DIR] [--log FILE] [--log-format text|json]
//             [--systemd-cgroup] COMMAND [OPTIONS] ID ...
//
// Commands: create, start, state, kill, delete, exec, ps, list, features;
// --version. monitor.h tells how a container's process is run and
// watched; vm.h how its root becomes the guest's drive. Errors are runc's
// (exit 1, 3 for an unknown command) with the message on stderr and, with
// --log, as a JSON line {"level":"error","msg":...,"time":...} in the log.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "src/common/version.h"
#include "src/oci/api_client.h"
#include "src/oci/args.h"
#include "src/oci/console.h"
#include "src/oci/log.h"
#include "src/oci/monitor.h"
#include "src/oci/network.h"
#include "src/oci/spec.h"
#include "src/oci/state.h"
#include "src/jail/cgroup.h"
#include "src/oci/cgroups.h"
#include "src/oci/hooks.h"
#include "src/oci/mounts.h"
#include "src/oci/request.h"
#include "src/oci/template.h"
#include "src/oci/vm.h"

namespace {

using ember::agent::Fd;
namespace agent = ember::agent;
namespace oci = ember::oci;
namespace jail = ember::jail;

oci::Logger logger;

int Error(const std::string& message, int code = oci::kExitError) {
  logger.Write("error", message);
  return code;
}

std::string Dir(const oci::CommandLine& cl, const std::string& id) { return cl.root + "/" + id; }

// Held by the commands that read and then write a container's record
// (create, start, pause, resume, delete), so that two at once do not lose
// one's change (a pause during start's hooks). Released when the returned
// descriptor closes; an invalid one when the container's directory is not
// there (Load then says so).
Fd LockContainer(const oci::CommandLine& cl, const std::string& id) {
  if (!oci::ValidId(id)) return Fd();
  Fd fd(open((Dir(cl, id) + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  while (fd.valid() && flock(fd.get(), LOCK_EX) != 0 && errno == EINTR) {
  }
  return fd;
}

bool WriteFileAtomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) return false;
  }
  return rename(tmp.c_str(), path.c_str()) == 0;
}

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream in(path);
  *ok = static_cast<bool>(in);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::StatusOr<oci::ContainerRecord> Load(const oci::CommandLine& cl, const std::string& id) {
  if (!oci::ValidId(id)) return absl::NotFoundError("container does not exist");
  bool ok;
  std::string text = ReadFile(Dir(cl, id) + "/state.json", &ok);
  if (!ok) return absl::NotFoundError("container does not exist");
  return oci::RecordFromJson(text);
}

bool Save(const oci::CommandLine& cl, const oci::ContainerRecord& r) {
  return WriteFileAtomic(Dir(cl, r.id) + "/state.json", oci::RecordToJson(r));
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

bool ParseSignal(const std::string& text, int* signo) {
  if (absl::SimpleAtoi(text, signo)) return *signo > 0 && *signo < 65;
  std::string name = text.rfind("SIG", 0) == 0 ? text.substr(3) : text;
  for (int s = 1; s < 32; ++s) {
    const char* abbrev = sigabbrev_np(s);
    if (abbrev && name == abbrev) {
      *signo = s;
      return true;
    }
  }
  return false;
}

bool ParseSize(const std::string& text, uint32_t min, uint32_t max, uint32_t* out) {
  uint32_t v;
  if (!absl::SimpleAtoi(text, &v) || v < min || v > max) return false;
  *out = v;
  return true;
}

// The pid file as runc writes it: the number alone, written to a temporary
// name and renamed, so that a reader never sees half of it.
bool WritePidFile(const std::string& path, pid_t pid) {
  return path.empty() || WriteFileAtomic(path, std::to_string(pid));
}

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
  oci::VmAssets assets = oci::FindAssets();
  auto layout = oci::PrepareLayout(assets, cl.root, id, dir);
  if (!layout.ok()) return undo(std::string(layout.status().message()));
  auto undo_all = [&](const std::string& why) {
    if (!layout->jail_dir.empty()) oci::RemoveTree(layout->jail_dir);
    return undo(why);
  };
  if (layout->uds.size() >= 108) {
    return undo_all("path too long for the VM's socket: " + layout->uds);
  }
  auto image_begin = std::chrono::steady_clock::now();
  if (auto s = oci::MakeImage(spec->root_path, layout->image, oci::CopiesBytes(*mounts));
      !s.ok()) {
    return undo_all(std::string(s.message()));
  }
  if (auto s = oci::ApplyToImage(*mounts, layout->image, dir + "/binds"); !s.ok()) {
    return undo_all(std::string(s.message()));
  }
  logger.Write("info", absl::StrCat("image of ", spec->root_path, " made in ",
                                    Seconds(image_begin), " s"));
  bool jailed = !layout->jail_dir.empty();
  if (jailed && chown(layout->image.c_str(), assets.jail_uid, assets.jail_gid) != 0) {
    return undo_all("cannot give the image to the jail's user: " + std::string(strerror(errno)));
  }
  std::string tap = oci::TapName(cl.root, id);
  std::string config = oci::VmConfigJson(
      jailed ? "/vmlinux" : assets.kernel, jailed ? "/agent.ext4" : assets.rootfs,
      jailed ? "/root.ext4" : layout->image, jailed ? "/v.sock" : layout->uds, spec->vm, tap);
  if (!WriteFileAtomic(layout->config, config)) return undo_all("cannot write " + layout->config);
  // A container starts from the template when there is one (made in the
  // same mode) unless asked to boot cold.
  oci::TemplateFiles tpl;
  const char* boot = getenv("EMBER_OCI_BOOT");
  auto boot_annotation = spec->annotations.find("io.ember.boot");
  bool cold = (boot && std::string(boot) == "cold") ||
              (boot_annotation != spec->annotations.end() && boot_annotation->second == "cold");
  bool restore = !cold && oci::TemplateReady(cl.root, spec->vm, assets.rootfs, &tpl) &&
                 tpl.jailed == jailed;
  if (restore) {
    if (auto s = oci::PrepareRestore(*layout, tpl); !s.ok()) return undo_all(std::string(s.message()));
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

  oci::MonitorPlan plan;
  plan.exec.socket_path = layout->uds;
  plan.exec.request = std::move(request);
  plan.tty_slave = pty.slave.get();
  plan.owns_vm = true;
  plan.assets = assets;
  plan.layout = *layout;
  plan.dir = dir;
  plan.start_fifo = fifo_r.get();
  plan.ready_fd = ready_w.get();
  plan.restore = restore;
  plan.template_files = tpl;
  plan.tap = tap;
  plan.connect_network = !oci::IsPodSandbox(spec->annotations);
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
  record.jail_dir = layout->jail_dir;
  record.uds = layout->uds;
  record.tap = tap;
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
    return undo_all("cannot start " + (jailed ? assets.jailer : assets.vmm) +
                    (n > 0 ? ": " + std::string(why, n) : std::string()));
  }
  record.vmm = oci::RefOf(static_cast<pid_t>(vmm));
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
  logger.Write("info", absl::StrCat("created ", id, restore ? " from the template" : " (cold boot)",
                                    " in ", Seconds(begin), " s"));
  return 0;
}

// The hooks create kept for `start` and `delete` (none: no hooks.json).
oci::Hooks SavedHooks(const oci::CommandLine& cl, const std::string& id) {
  bool ok;
  std::string text = ReadFile(Dir(cl, id) + "/hooks.json", &ok);
  if (!ok) return {};
  auto hooks = oci::ParseHooks(text);
  return hooks.ok() ? *hooks : oci::Hooks{};
}

int Start(const oci::CommandLine& cl) {
  Fd lock = LockContainer(cl, cl.args[0]);
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  switch (oci::StatusOf(*record)) {
    case oci::Status::kStopped:
      return Error("cannot start a container that has stopped");
    case oci::Status::kRunning:
      return Error("cannot start an already running container");
    case oci::Status::kPaused:
      return Error("cannot start a container in the paused state");
    case oci::Status::kCreating:  // StatusOf never says so
    case oci::Status::kCreated:
      break;
  }
  Fd fifo(open((Dir(cl, record->id) + "/exec.fifo").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fifo.valid()) return Error("cannot start the container: its monitor is gone");
  oci::Hooks hooks = SavedHooks(cl, record->id);
  if (auto s = oci::RunHooks(hooks.start_container,
                             oci::OciStateJson(*record, oci::Status::kCreated, false),
                             "startContainer");
      !s.ok()) {
    return Error(std::string(s.message()));
  }
  record->started = true;
  if (!Save(cl, *record)) return Error("cannot write the container's state");
  if (write(fifo.get(), "s", 1) != 1) return Error("cannot start the container");
  if (auto s = oci::RunHooks(hooks.poststart,
                             oci::OciStateJson(*record, oci::Status::kRunning, false),
                             "poststart");
      !s.ok()) {
    logger.Write("warning", std::string(s.message()));
  }
  return 0;
}

int State(const oci::CommandLine& cl) {
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  std::string out = oci::OciStateJson(*record, oci::StatusOf(*record));
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int Kill(const oci::CommandLine& cl) {
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  int signo = SIGTERM;
  if (cl.args.size() > 1 && !ParseSignal(cl.args[1], &signo)) {
    return Error("unknown signal \"" + cl.args[1] + "\"");
  }
  if (oci::StatusOf(*record) == oci::Status::kStopped) return Error("container not running");
  // Before `start` the monitor has its default dispositions (the signal
  // acts on it as on runc's waiting init); afterwards it forwards the
  // signal to the process in the guest, and SIGKILL ends the monitor,
  // whose closed connection makes the agent kill the process group.
  if (kill(record->monitor.pid, signo) != 0) return Error("kill: " + std::string(strerror(errno)));
  // --all: the exec'd processes' monitors too, which forward it the same way.
  if (cl.Has("all")) {
    for (const oci::ProcessRef& exec : oci::LiveExecs(Dir(cl, record->id))) {
      kill(exec.pid, signo);
    }
  }
  return 0;
}

// Stops whatever of the container still runs and removes its directory.
void Teardown(const oci::CommandLine& cl, const oci::ContainerRecord& r) {
  if (oci::Alive(r.monitor)) kill(r.monitor.pid, SIGKILL);
  for (const oci::ProcessRef& exec : oci::LiveExecs(Dir(cl, r.id))) kill(exec.pid, SIGKILL);
  if (oci::Alive(r.vmm)) kill(r.vmm.pid, SIGKILL);
  // The VMM (reaped by its monitor, or by the shim once orphaned) must be
  // gone before its files go.
  for (int i = 0; i < 100 && oci::Alive(r.vmm); ++i) usleep(20 * 1000);
  if (!r.cgroup.empty()) jail::LeaveCgroup(r.cgroup_version, r.cgroup, oci::ContainerControllers());
  // A namespace of the container's own went with its processes; a pod's
  // stays, and the TAP with it unless removed (the monitor does it when it
  // ends, and may have been killed).
  if (!r.netns.empty() && !r.tap.empty()) oci::RemoveTapIn(r.netns, r.tap);
  oci::RemoveTree(Dir(cl, r.id));
  if (!r.jail_dir.empty()) oci::RemoveJailDir(r.jail_dir);
}

int Delete(const oci::CommandLine& cl) {
  Fd lock = LockContainer(cl, cl.args[0]);
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) {
    // As runc: a directory without a record (a create that never got as
    // far as its fork) is removed, with the jail it may have made, and with
    // --force a container that is not there is not an error. A record that
    // does not parse is left alone: what it names may still run.
    const std::string& id = cl.args[0];
    if (oci::ValidId(id) && access((Dir(cl, id) + "/state.json").c_str(), F_OK) != 0) {
      oci::RemoveTree(Dir(cl, id));
      oci::RemoveJailDir(oci::JailDir(oci::FindAssets(), cl.root, id));
      if (cl.Has("force")) return 0;
    }
    return Error(std::string(record.status().message()));
  }
  oci::Status status = oci::StatusOf(*record);
  if ((status == oci::Status::kRunning || status == oci::Status::kPaused) && !cl.Has("force")) {
    return Error("cannot delete container " + record->id + " that is not stopped: " +
                 oci::StatusName(status));
  }
  oci::Hooks hooks = SavedHooks(cl, record->id);
  Teardown(cl, *record);
  if (auto s = oci::RunHooks(hooks.poststop,
                             oci::OciStateJson(*record, oci::Status::kStopped, false),
                             "poststop");
      !s.ok()) {
    logger.Write("warning", std::string(s.message()));
  }
  return 0;
}

// runc's freezer, as the VMM's: the whole microVM's vCPUs stop (PATCH /vm,
// Paused) and go on (Resumed). The process in the guest and the guest's
// clock see a gap; signals sent meanwhile wait for the resume.
int PauseOrResume(const oci::CommandLine& cl, bool pause) {
  Fd lock = LockContainer(cl, cl.args[0]);
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  oci::Status status = oci::StatusOf(*record);
  if (pause && status != oci::Status::kRunning && status != oci::Status::kCreated) {
    return Error("container not running");
  }
  if (!pause && status != oci::Status::kPaused) return Error("container not paused");
  std::string api = oci::ApiSocket(record->jail_dir, Dir(cl, record->id));
  auto answer = oci::ApiRequest(api, "PATCH", "/vm",
                                pause ? R"({"state":"Paused"})" : R"({"state":"Resumed"})");
  if (!answer.ok() || *answer != 204) {
    return Error(absl::StrCat("cannot ", pause ? "pause" : "resume", " the microVM: ",
                              answer.ok() ? absl::StrCat("it answered ", *answer)
                                          : std::string(answer.status().message())));
  }
  record->paused = pause;
  if (!Save(cl, *record)) return Error("cannot write the container's state");
  return 0;
}

// runc's `update --resources FILE|-` (what go-runc sends: a LinuxResources
// object), applied to the container's cgroup, which holds the monitor and
// the VMM: the limits bound the whole microVM. runc's per-limit flags
// (--memory, ...) are not taken.
int Update(const oci::CommandLine& cl) {
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  if (oci::StatusOf(*record) == oci::Status::kStopped) return Error("container not running");
  std::string from = cl.Value("resources");
  if (from.empty()) return Error("ember-oci update needs --resources FILE (- for stdin)");
  bool ok = true;
  std::string text;
  if (from == "-") {
    std::stringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  } else {
    text = ReadFile(from, &ok);
  }
  if (!ok) return Error("cannot read " + from);
  auto resources = oci::ParseResources(text);
  if (!resources.ok()) return Error(std::string(resources.status().message()));
  if (record->cgroup.empty()) {
    return Error("the container has no cgroup to update (config.json had no linux.cgroupsPath)");
  }
  auto plan = oci::PlanCgroup("/" + record->cgroup, *resources, record->cgroup_version);
  if (!plan.ok()) return Error(std::string(plan.status().message()));
  if (auto s = jail::UpdateCgroup(*plan); !s.ok()) return Error(std::string(s.message()));
  return 0;
}

int Exec(const oci::CommandLine& cl) {
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  if (oci::StatusOf(*record) == oci::Status::kPaused) {
    return Error("cannot exec in a paused container");
  }
  // Unlike runc, not before `start`: the container's mounts, host name and
  // read-only root are made by its own process's request.
  if (oci::StatusOf(*record) != oci::Status::kRunning) {
    return Error("cannot exec in a stopped or not yet started container");
  }
  std::string path = cl.Value("process");
  if (path.empty()) return Error("ember-oci exec needs --process (a process.json)");
  bool ok;
  std::string text = ReadFile(path, &ok);
  if (!ok) return Error("cannot read " + path);
  auto process = oci::ParseProcess(text, "process");
  if (!process.ok()) return Error(std::string(process.status().message()));
  if (cl.Has("tty")) process->terminal = true;
  agent::ExecRequest request = oci::ContainerRequest(*process, "");
  if (auto s = oci::CheckRequest(request); !s.ok()) return Error(std::string(s.message()));
  std::string console_socket = cl.Value("console-socket");
  if (process->terminal && console_socket.empty()) {
    return Error("cannot allocate tty if ember-oci will detach without setting console socket");
  }
  oci::Pty pty;
  if (process->terminal) {
    if (auto s = oci::OpenPty(&pty); !s.ok()) return Error(std::string(s.message()));
    if (auto s = oci::SendConsole(console_socket, pty.master.get(), pty.name); !s.ok()) {
      return Error(std::string(s.message()));
    }
    pty.master.reset();
  }
  oci::MonitorPlan plan;
  plan.exec.socket_path = record->uds;
  plan.exec.request = std::move(request);
  plan.tty_slave = pty.slave.get();
  // As runc's, exec returns once the process runs, and fails when it
  // cannot start ("exec failed: ..."), rather than leaving a process that
  // exits 127 at once.
  int started[2];
  if (pipe2(started, O_CLOEXEC) != 0) return Error("pipe: " + std::string(strerror(errno)));
  Fd started_r(started[0]), started_w(started[1]);
  plan.exec.started_fd = started_w.get();
  // A VMM that is gone will not answer: no waiting out connect_wait_s.
  plan.exec.gave_up = [vmm = record->vmm] { return !oci::Alive(vmm); };
  pid_t pid = fork();
  if (pid < 0) return Error("fork: " + std::string(strerror(errno)));
  if (pid == 0) {
    started_r.reset();
    // In the container's cgroup, as runc puts an exec'd process there.
    if (!record->cgroup.empty()) {
      auto placement = oci::PlanCgroup("/" + record->cgroup, {}, record->cgroup_version);
      absl::Status joined = placement.ok() ? jail::JoinCgroup(*placement, getpid())
                                           : placement.status();
      if (!joined.ok()) {
        std::string why = absl::StrCat("cannot join the container's cgroup: ", joined.message());
        (void)!write(started_w.get(), why.data(), why.size());
        _exit(1);
      }
    }
    oci::RunMonitor(std::move(plan));
  }
  started_w.reset();
  oci::RecordExec(Dir(cl, record->id), oci::RefOf(pid));
  std::string outcome;
  char buf[1024];
  ssize_t n;
  while ((n = read(started_r.get(), buf, sizeof(buf))) > 0 ||
         (n < 0 && errno == EINTR)) {
    if (n > 0) outcome.append(buf, n);
  }
  auto reap = [pid] {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  };
  if (outcome.empty() || outcome[0] != '\0') {
    reap();
    return Error("exec failed: " + (outcome.empty() ? "the monitor ended" : outcome));
  }
  if (!WritePidFile(cl.Value("pid-file"), pid)) {
    kill(pid, SIGKILL);
    reap();
    return Error("cannot write the pid file");
  }
  if (cl.Has("detach")) return 0;
  return reap();
}

int Ps(const oci::CommandLine& cl) {
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  // The host's side of each process in the guest: its monitor, which
  // lives as long as it does (the init's, then the exec'd ones').
  std::vector<pid_t> pids;
  if (oci::StatusOf(*record) != oci::Status::kStopped) {
    pids.push_back(record->monitor.pid);
    for (const oci::ProcessRef& exec : oci::LiveExecs(Dir(cl, record->id))) {
      pids.push_back(exec.pid);
    }
  }
  std::string format = cl.Has("format") ? cl.Value("format") : "table";
  if (format == "json") {
    std::string list;
    for (pid_t pid : pids) list += (list.empty() ? "" : ",") + std::to_string(pid);
    std::printf("[%s]\n", list.c_str());
  } else if (format == "table") {
    std::printf("PID\n");
    for (pid_t pid : pids) std::printf("%d\n", pid);
  } else {
    return Error("invalid format option");
  }
  return 0;
}

int List(const oci::CommandLine& cl) {
  std::string format = cl.Has("format") ? cl.Value("format") : "table";
  if (format != "table" && format != "json") return Error("invalid format option");
  bool json = format == "json", quiet = cl.Has("quiet");
  if (!json && !quiet) std::printf("ID\tPID\tSTATUS\tBUNDLE\tCREATED\n");
  std::string states;  // with --format json: runc's array of OCI states
  DIR* d = opendir(cl.root.c_str());
  while (dirent* e = d ? readdir(d) : nullptr) {
    auto record = Load(cl, e->d_name);
    if (!record.ok()) continue;
    oci::Status status = oci::StatusOf(*record);
    if (json) {
      states += (states.empty() ? "" : ",") + oci::OciStateJson(*record, status, false);
    } else if (quiet) {
      std::printf("%s\n", record->id.c_str());
    } else {
      std::printf("%s\t%d\t%s\t%s\t%s\n", record->id.c_str(),
                  status == oci::Status::kStopped ? 0 : record->monitor.pid,
                  oci::StatusName(status), record->bundle.c_str(), record->created.c_str());
    }
  }
  if (d) closedir(d);
  if (json) std::printf("[%s]\n", states.c_str());
  return 0;
}

int Features() {
  std::printf(
      "{\n  \"ociVersionMin\": \"1.0.0\",\n  \"ociVersionMax\": \"%s\",\n"
      "  \"hooks\": [\"prestart\", \"createRuntime\", \"createContainer\", "
      "\"startContainer\", \"poststart\", \"poststop\"],\n"
      "  \"mountOptions\": [],\n"
      "  \"linux\": {\n    \"namespaces\": [],\n    \"capabilities\": [],\n"
      "    \"cgroup\": {\"v1\": true, \"v2\": true, \"systemd\": true},\n"
      "    \"seccomp\": {\"enabled\": false}\n  },\n"
      "  \"annotations\": {\"io.ember.vcpus\": \"vCPUs of the container's microVM\","
      " \"io.ember.mem_mib\": \"its memory in MiB\"}\n}\n",
      oci::kOciVersion);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  oci::CommandLine cl;
  oci::UsageError usage;
  if (!oci::ParseCommandLine(args, &cl, &usage)) {
    // The log options may be parsed already; runc logs usage errors too.
    logger.path = cl.log;
    logger.json = cl.log_json;
    return Error(usage.message, usage.exit_code);
  }
  logger.path = cl.log;
  logger.json = cl.log_json;
  if (cl.version) {
    std::printf("ember-oci version %s\nspec: %s\n", EMBER_VERSION, oci::kOciVersion);
    return 0;
  }
  if (cl.help) {
    std::printf("usage: ember-oci [--root DIR] [--log FILE] [--log-format text|json] COMMAND\n"
                "commands:");
    for (const auto& c : oci::CommandNames()) std::printf(" %s", c.c_str());
    std::printf("\n");
    return 0;
  }
  const std::string& c = cl.command;
  if (c == "create") return Create(cl);
  if (c == "start") return Start(cl);
  if (c == "state") return State(cl);
  if (c == "kill") return Kill(cl);
  if (c == "delete") return Delete(cl);
  if (c == "exec") return Exec(cl);
  if (c == "pause" || c == "resume") return PauseOrResume(cl, c == "pause");
  if (c == "update") return Update(cl);
  if (c == "ps") return Ps(cl);
  if (c == "list") return List(cl);
  if (c == "features") return Features();
  if (c == "template") {
    auto begin = std::chrono::steady_clock::now();
    oci::VmSize size;
    using Size = oci::VmSize;
    if ((cl.Has("vcpus") && !ParseSize(cl.Value("vcpus"), 1, Size::kMaxVcpus, &size.vcpus)) ||
        (cl.Has("mem-mib") &&
         !ParseSize(cl.Value("mem-mib"), Size::kMinMemMib, Size::kMaxMemMib, &size.mem_mib))) {
      return Error(absl::StrCat("template: --vcpus must be 1..", Size::kMaxVcpus,
                                " and --mem-mib ", Size::kMinMemMib, "..", Size::kMaxMemMib,
                                " (the io.ember.vcpus and io.ember.mem_mib annotations' ranges)"));
    }
    if (auto s = oci::BuildTemplate(oci::FindAssets(), cl.root, size); !s.ok()) {
      return Error("cannot make the template: " + std::string(s.message()));
    }
    logger.Write("info", absl::StrCat("template made in ", Seconds(begin), " s"));
    return 0;
  }
  return Error("No help topic for '" + c + "'", oci::kExitUnknownCommand);
}
