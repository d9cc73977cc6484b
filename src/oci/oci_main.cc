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
#include "src/oci/commands.h"
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
using namespace ember::oci::cli;

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
  for (const absl::Status& s : oci::RunEveryHook(
           hooks.poststart, oci::OciStateJson(*record, oci::Status::kRunning, false),
           "poststart")) {
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
  // whose closed connection makes the agent kill the process group. A
  // pod's sandbox's monitor takes it as pause would.
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
  if (!r.netns.empty()) oci::RemoveTapIn(r.netns, oci::TapName(cl.root, r.id));
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
  for (const absl::Status& s : oci::RunEveryHook(
           hooks.poststop, oci::OciStateJson(*record, oci::Status::kStopped, false),
           "poststop")) {
    logger.Write("warning", std::string(s.message()));
  }
  return 0;
}

// runc's freezer, as the VMM's: the whole microVM's vCPUs stop (PATCH /vm,
// Paused) and go on (Resumed). The process in the guest and the guest's
// clock see a gap; signals sent meanwhile wait for the resume. A pod's
// sandbox's monitor is stopped and continued.
int PauseOrResume(const oci::CommandLine& cl, bool pause) {
  Fd lock = LockContainer(cl, cl.args[0]);
  auto record = Load(cl, cl.args[0]);
  if (!record.ok()) return Error(std::string(record.status().message()));
  oci::Status status = oci::StatusOf(*record);
  if (pause && status != oci::Status::kRunning && status != oci::Status::kCreated) {
    return Error("container not running");
  }
  if (!pause && status != oci::Status::kPaused) return Error("container not paused");
  if (record->sandbox) {
    // A pod's sandbox: the monitor that stands for pause stops and goes on.
    if (kill(record->monitor.pid, pause ? SIGSTOP : SIGCONT) != 0) {
      return Error("kill: " + std::string(strerror(errno)));
    }
    record->paused = pause;
    return Save(cl, *record) ? 0 : Error("cannot write the container's state");
  }
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
  oci::Status status = oci::StatusOf(*record);
  if (status == oci::Status::kPaused) return Error("cannot exec in a paused container");
  if (status == oci::Status::kStopped) return Error("cannot exec in a stopped container");
  if (record->sandbox) {
    return Error("cannot exec in a pod's sandbox: it runs no microVM (its containers have theirs)");
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
  // As runc, before `start` too. The guest has not made the container's
  // root yet (the init's request does): this request makes it as that one
  // will, from the bundle's config.json (its mounts, host name, read-only
  // root); the init's then finds it made.
  if (status == oci::Status::kCreated) {
    auto spec = oci::LoadBundle(record->bundle);
    if (!spec.ok()) return Error("exec before start: " + std::string(spec.status().message()));
    auto mounts = oci::PlanMounts(spec->mounts);
    if (!mounts.ok()) return Error(std::string(mounts.status().message()));
    request = oci::ContainerRequest(*process, spec->hostname, mounts->guest);
    request.container.root_readonly = spec->root_readonly;
  }
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
