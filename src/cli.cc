#include "src/cli.h"

#include <cstdlib>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "src/common/log.h"

namespace ember {

const char kUsage[] =
    "Usage: ember [OPTIONS]\n"
    "\n"
    "  --config-file FILE   configure the microVM from FILE (Firecracker's JSON) and boot it\n"
    "  --no-api             serve no HTTP API; requires --config-file\n"
    "  --api-sock PATH      the API's Unix socket (default /run/ember.socket)\n"
    "  --id ID              instance id: 1-64 letters, digits or '-'\n"
    "  --level LEVEL        log level: Error, Warning, Info (default), Debug or Off\n"
    "  --http-api-max-payload-size BYTES   API request body limit (default 51200)\n"
    "  --no-seccomp         run without seccomp filters (not for production)\n"
    "  --seccomp-filter FILE  per-thread filters compiled by ember-seccompiler, instead of\n"
    "                       the built-in ones (resources/seccomp/x86_64.json)\n"
    "  --boot-timer         log the guest's boot time when its init writes 123 at 0xd0000000\n"
    "  --help               print this text\n"
    "  --version            print Ember's version\n"
    "\n"
    "Exit codes: 0 the guest reset or shut down; 1 a VMM or vCPU error stopped the VM;\n"
    "148 a seccomp filter denied a system call (logged with its name);\n"
    "152 the configuration was refused; 153 the command line was refused;\n"
    "130 or 143: SIGINT or SIGTERM stopped the VM (in order, threads joined).\n";

absl::StatusOr<CliOptions> ParseCli(const std::vector<std::string>& args) {
  CliOptions opts;
  std::map<std::string, std::string*> values = {
      {"--config-file", &opts.config_file},
      {"--api-sock", &opts.api_sock},
      {"--id", &opts.id},
      {"--level", &opts.level},
      {"--seccomp-filter", &opts.seccomp_filter},
  };
  std::string max_payload;
  values.emplace("--http-api-max-payload-size", &max_payload);
  const std::map<std::string, bool*> flags = {
      {"--no-api", &opts.no_api}, {"--help", &opts.help},
      {"-h", &opts.help},         {"--version", &opts.version},
      {"--no-seccomp", &opts.no_seccomp}, {"--boot-timer", &opts.boot_timer},
  };
  for (size_t i = 0; i < args.size(); i++) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    if (auto v = values.find(arg); v != values.end()) {
      if (inline_value) {
        *v->second = *inline_value;
      } else if (i + 1 < args.size()) {
        *v->second = args[++i];
      } else {
        return absl::InvalidArgumentError(arg + " needs a value");
      }
    } else if (auto f = flags.find(arg); f != flags.end()) {
      if (inline_value) return absl::InvalidArgumentError(arg + " takes no value");
      *f->second = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument '", args[i], "'"));
    }
  }
  if (!max_payload.empty()) {
    char* end = nullptr;
    unsigned long long n = std::strtoull(max_payload.c_str(), &end, 10);
    if (*end != '\0' || n == 0 || n > (64u << 20) || max_payload[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "--http-api-max-payload-size '", max_payload, "' must be 1 to 67108864 bytes"));
    }
    opts.http_api_max_payload_size = n;
  }
  if (!ValidInstanceId(opts.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--id '", opts.id, "' must be 1-64 letters, digits or '-'"));
  }
  if (!ParseLogLevel(opts.level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--level '", opts.level, "' must be Error, Warning, Info, Debug or Off"));
  }
  if (opts.no_seccomp && !opts.seccomp_filter.empty()) {
    return absl::InvalidArgumentError("--no-seccomp and --seccomp-filter exclude each other");
  }
  if (opts.no_api && opts.config_file.empty() && !opts.help && !opts.version) {
    return absl::InvalidArgumentError("--no-api needs --config-file");
  }
  return opts;
}

}  // namespace ember
