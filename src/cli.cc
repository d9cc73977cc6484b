#include "src/cli.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ember {

const char kUsage[] =
    "Usage: ember [OPTIONS]\n"
    "\n"
    "  --config-file FILE   configure the microVM from FILE (Firecracker's JSON) and boot it\n"
    "  --no-api             serve no HTTP API; requires --config-file\n"
    "  --api-sock PATH      the API's Unix socket (default /run/ember.socket)\n"
    "  --id ID              instance id: 1-64 letters, digits or '-'\n"
    "  --level LEVEL        log level: Error, Warning, Info (default) or Debug\n"
    "  --help               print this text\n"
    "  --version            print Ember's version\n"
    "\n"
    "Exit codes: 0 the guest reset or shut down; 1 a VMM or vCPU error stopped the VM;\n"
    "152 the configuration was refused; 153 the command line was refused;\n"
    "130 or 143: SIGINT or SIGTERM stopped the VM (in order, threads joined).\n";

bool ValidInstanceId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

absl::StatusOr<CliOptions> ParseCli(const std::vector<std::string>& args) {
  CliOptions opts;
  for (size_t i = 0; i < args.size(); i++) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(arg + " needs a value");
      return args[++i];
    };
    auto flag = [&](bool* out) -> absl::Status {
      if (inline_value) return absl::InvalidArgumentError(arg + " takes no value");
      *out = true;
      return absl::OkStatus();
    };
    absl::Status st;
    if (arg == "--config-file") {
      absl::StatusOr<std::string> v = value();
      if (!v.ok()) return v.status();
      opts.config_file = *v;
    } else if (arg == "--api-sock") {
      absl::StatusOr<std::string> v = value();
      if (!v.ok()) return v.status();
      opts.api_sock = *v;
    } else if (arg == "--id") {
      absl::StatusOr<std::string> v = value();
      if (!v.ok()) return v.status();
      opts.id = *v;
    } else if (arg == "--level") {
      absl::StatusOr<std::string> v = value();
      if (!v.ok()) return v.status();
      opts.level = *v;
    } else if (arg == "--no-api") {
      st = flag(&opts.no_api);
    } else if (arg == "--help" || arg == "-h") {
      st = flag(&opts.help);
    } else if (arg == "--version") {
      st = flag(&opts.version);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument '", args[i], "'"));
    }
    if (!st.ok()) return st;
  }
  if (!ValidInstanceId(opts.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--id '", opts.id, "' must be 1-64 letters, digits or '-'"));
  }
  if (opts.level != "Error" && opts.level != "Warning" && opts.level != "Info" &&
      opts.level != "Debug") {
    return absl::InvalidArgumentError(
        absl::StrCat("--level '", opts.level, "' must be Error, Warning, Info or Debug"));
  }
  if (opts.no_api && opts.config_file.empty() && !opts.help && !opts.version) {
    return absl::InvalidArgumentError("--no-api needs --config-file");
  }
  return opts;
}

}  // namespace ember
