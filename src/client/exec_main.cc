// ember-exec: runs a command in a microVM through its guest agent
// (ember-agent, src/agent/PROTOCOL.md) over the VM's vsock Unix socket.
//
//   ember-exec --uds PATH [--port 1024] [--env K=V]... [--cwd DIR]
//              [--timeout S] [--no-stdin] -- CMD [ARGS...]
//   ember-exec --unix PATH ... -- CMD [ARGS...]   (an agent started with
//                                                  --listen unix:PATH)
//
// Its stdin goes to the command (until EOF; --no-stdin gives it /dev/null),
// the command's stdout and stderr come out on its own, SIGINT, SIGTERM and
// SIGHUP are passed on, and it exits with the command's status (128 + N
// when signal N killed it). Its own failures: 124 timeout (the command is
// killed), 125 no connection or agent error, 126 not executable, 127 not
// found.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "src/client/exec_client.h"

namespace {

constexpr char kUsage[] =
    "usage: ember-exec (--uds PATH [--port N] | --unix PATH) [--env K=V]... [--cwd DIR]\n"
    "                  [--timeout SECONDS] [--no-stdin] -- COMMAND [ARGS...]\n";

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

}  // namespace

int main(int argc, char** argv) {
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
  return ember::client::RunExec(options);
}
