// ember-exec: runs a command in a microVM through its guest agent
// (ember-agent, src/agent/PROTOCOL.md) over the VM's vsock Unix socket.
//
//   ember-exec --uds PATH [--port 1024] [--env K=V]... [--cwd DIR]
//              [--timeout S] [--no-stdin] [--tty] [--user UID:GID[:G,...]]
//              [--root DIR [--root-device DEV]] [--hostname NAME] -- CMD [ARGS...]
//   ember-exec --unix PATH ... -- CMD [ARGS...]   (an agent started with
//                                                  --listen unix:PATH)
//
// Its stdin goes to the command (until EOF; --no-stdin gives it /dev/null),
// the command's stdout and stderr come out on its own, SIGINT, SIGTERM and
// SIGHUP are passed on, and it exits with the command's status (128 + N
// when signal N killed it). Its own failures: 124 timeout (the command is
// killed), 125 no connection or agent error, 126 not executable, 127 not
// found. --tty runs the command on a terminal in the guest (ours goes raw
// meanwhile); --user, --root, --root-device and --hostname run it as a
// container's process (protocol.h's ContainerSpec; the environment is then
// only the --env entries).
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "src/client/exec_client.h"

namespace {

constexpr char kUsage[] =
    "usage: ember-exec (--uds PATH [--port N] | --unix PATH) [--env K=V]... [--cwd DIR]\n"
    "                  [--timeout SECONDS] [--no-stdin] [--tty] [--user UID:GID[:G,...]]\n"
    "                  [--root DIR [--root-device DEV]] [--hostname NAME] -- COMMAND [ARGS...]\n";

int Usage(const std::string& message) {
  if (!message.empty()) std::fprintf(stderr, "ember-exec: %s\n", message.c_str());
  std::fputs(kUsage, stderr);
  return ember::client::kExitFailure;
}

bool ParseNumber(const char* text, double max, double* value) {
  char* end = nullptr;
  *value = std::strtod(text, &end);
  return *text != '\0' && *end == '\0' && *value >= 0 && *value <= max;
}

// "UID:GID" or "UID:GID:G1,G2,...".
bool ParseUser(const std::string& text, ember::agent::ContainerSpec* spec) {
  std::vector<uint32_t> ids;
  size_t start = 0;
  for (int field = 0; start <= text.size(); ++field) {
    size_t end = text.find(field < 2 ? ':' : ',', start);
    if (end == std::string::npos) end = text.size();
    double v;
    if (!ParseNumber(text.substr(start, end - start).c_str(), 4294967295.0, &v)) return false;
    ids.push_back(static_cast<uint32_t>(v));
    start = end + 1;
  }
  if (ids.size() < 2) return false;
  spec->uid = ids[0];
  spec->gid = ids[1];
  spec->groups.assign(ids.begin() + 2, ids.end());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // A reader that leaves makes the write fail (EPIPE), and RunExec ends
  // the command and restores the terminal, rather than dying here.
  signal(SIGPIPE, SIG_IGN);
  ember::client::ExecOptions options;
  options.request.flags = ember::agent::ExecRequest::kFlagStdin;
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.rfind("--", 0) != 0) break;  // the command, without "--"
    if (arg == "--no-stdin") {
      options.request.flags &= ~ember::agent::ExecRequest::kFlagStdin;
      continue;
    }
    if (arg == "--tty") {
      options.request.flags |= ember::agent::ExecRequest::kFlagTty;
      continue;
    }
    if (i + 1 >= argc) return Usage(arg + " needs a value");
    const char* value = argv[++i];
    double number;
    if (arg == "--uds" || arg == "--unix") {
      options.socket_path = value;
      options.through_vmm = arg == "--uds";
    } else if (arg == "--port") {
      if (!ParseNumber(value, 4294967295.0, &number)) return Usage("bad port");
      options.port = static_cast<uint32_t>(number);
    } else if (arg == "--env") {
      std::string entry = value;
      if (entry.find('=') == std::string::npos || entry[0] == '=') {
        return Usage("--env wants NAME=VALUE");
      }
      options.request.env.push_back(entry);
    } else if (arg == "--user") {
      if (!ParseUser(value, &options.request.container)) return Usage("--user wants UID:GID[:G,...]");
      options.request.flags |= ember::agent::ExecRequest::kFlagContainer;
    } else if (arg == "--root" || arg == "--root-device" || arg == "--hostname") {
      auto& c = options.request.container;
      (arg == "--root" ? c.root_dir : arg == "--hostname" ? c.hostname : c.root_device) = value;
      options.request.flags |= ember::agent::ExecRequest::kFlagContainer;
    } else if (arg == "--cwd") {
      options.request.cwd = value;
    } else if (arg == "--timeout") {
      if (!ParseNumber(value, 1e9, &number) || number == 0) return Usage("bad timeout");
      options.timeout_s = number;
    } else {
      return Usage("unknown option " + arg);
    }
  }
  if (options.socket_path.empty()) return Usage("--uds or --unix is required");
  for (; i < argc; ++i) options.request.argv.push_back(argv[i]);
  if (options.request.argv.empty()) return Usage("no command");
  // A terminal of ours passes keys through untouched while the guest's
  // terminal does the line editing; restored at the end.
  termios saved{};
  bool raw = (options.request.flags & ember::agent::ExecRequest::kFlagTty) && isatty(0) &&
             tcgetattr(0, &saved) == 0;
  if (options.request.flags & ember::agent::ExecRequest::kFlagTty) options.size_from_fd = 0;
  if (raw) {
    termios t = saved;
    cfmakeraw(&t);
    tcsetattr(0, TCSANOW, &t);
  }
  int status = ember::client::RunExec(options);
  if (raw) tcsetattr(0, TCSANOW, &saved);
  return status;
}
