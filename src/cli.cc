#include "src/cli.h"

#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "src/common/log.h"
#include "src/common/version.h"

namespace ember {

const char kUsage[] =
    "Usage: ember [OPTIONS]\n"
    "\n"
    "  --config-file FILE   configure the microVM from FILE (Firecracker's JSON) and boot it\n"
    "  --no-api             serve no HTTP API; requires --config-file\n"
    "  --api-sock PATH      the API's Unix socket (default /run/ember.socket; a binary\n"
    "                       named firecracker* uses /run/firecracker.socket)\n"
    "  --id ID              instance id: 1-64 letters, digits or '-'\n"
    "  --level LEVEL        log level: Error, Warning, Info (default), Debug, Trace or Off\n"
    "                       (any case; Warn for Warning)\n"
    "  --log-path PATH      log to this file or FIFO instead of stderr (as PUT /logger)\n"
    "  --show-level         put the level in each log line\n"
    "  --show-log-origin    put the source file and line in each log line\n"
    "  --module PATH        log only lines from source files below PATH in Ember's tree\n"
    "                       (\"src/devices/virtio\", \"api/\"; as logger.module)\n"
    "  --metrics-path PATH  write metrics to this file or FIFO (as PUT /metrics)\n"
    "  --http-api-max-payload-size BYTES   API request body limit (default 51200)\n"
    "  --mmds-size-limit BYTES  MMDS's data store limit (default: the API's payload limit)\n"
    "  --metadata FILE      fill MMDS's data store from FILE (JSON) at start\n"
    "  --no-seccomp         run without seccomp filters (not for production)\n"
    "  --seccomp-filter FILE  per-thread filters compiled by ember-seccompiler, instead of\n"
    "                       the built-in ones (resources/seccomp/x86_64.json)\n"
    "  --boot-timer         log the guest's boot time when its init writes 123 at 0xd0000000\n"
    "  --merge-guest-memory  advise guest memory MADV_MERGEABLE, so the host's KSM (when\n"
    "                       /sys/kernel/mm/ksm/run is 1) may merge identical pages across VMs.\n"
    "                       Off by default: merged pages let a guest learn, by timing its\n"
    "                       copy-on-write faults, what memory other VMs on the host hold\n"
    "                       (cross-VM side channel). Only for guests that trust each other.\n"
    "  --start-time-us US, --start-time-cpu-us US, --parent-cpu-time-us US\n"
    "                       from the jailer: Ember logs its start-up time and CPU from them\n"
    "  --snapshot-version   print the snapshot state file version this Ember writes\n"
    "  --describe-snapshot FILE  print the version of a snapshot state file\n"
    "  --help               print this text\n"
    "  --version            print Ember's version\n"
    "\n"
    "Refused, with the reason: --enable-pci (no PCI: the devices are virtio-mmio).\n"
    "\n"
    "Exit codes: 0 the guest reset or shut down; 1 a VMM or vCPU error stopped the VM;\n"
    "148 a seccomp filter denied a system call (logged with its name);\n"
    "152 the configuration was refused; 153 the command line was refused;\n"
    "130 or 143: SIGINT or SIGTERM stopped the VM (in order, threads joined).\n";

namespace {

// Firecracker's flags Ember cannot honour, and why.
const std::map<std::string, const char*>& Refused() {
  static const auto* refused = new std::map<std::string, const char*>{
      {"--enable-pci", "Ember has no PCI; its devices are virtio-mmio"},
  };
  return *refused;
}

// Firecracker reads levels in any case, and "Warn" for Warning; Ember's
// ParseLogLevel (PUT /logger) wants them as it spells them.
std::optional<std::string> CanonicalLevel(const std::string& level) {
  const std::string lower = absl::AsciiStrToLower(level);
  if (lower == "warn") return "Warning";
  for (const char* name : {"Error", "Warning", "Info", "Debug", "Trace", "Off"}) {
    if (lower == absl::AsciiStrToLower(name)) return name;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> Number(const std::string& arg, const std::string& value) {
  uint64_t n;
  if (value.empty() || !absl::ascii_isdigit(static_cast<unsigned char>(value[0])) ||
      !absl::SimpleAtoi(value, &n)) {
    return absl::InvalidArgumentError(absl::StrCat(arg, " '", value, "' must be a number"));
  }
  return n;
}

}  // namespace

namespace {

bool NamedFirecracker(absl::string_view program) {
  const size_t slash = program.rfind('/');
  absl::string_view name = slash == absl::string_view::npos ? program : program.substr(slash + 1);
  return absl::StartsWith(name, "firecracker");
}

}  // namespace

std::string DefaultApiSocket(absl::string_view program) {
  return NamedFirecracker(program) ? "/run/firecracker.socket" : "/run/ember.socket";
}

std::string VersionText(absl::string_view program) {
  const std::string ember = absl::StrCat("Ember v", kVersion, "\n");
  if (!NamedFirecracker(program)) return ember;
  return absl::StrCat("Firecracker v", kFirecrackerApiVersion, "\n\n", ember);
}

absl::StatusOr<CliOptions> ParseCli(const std::vector<std::string>& args,
                                    absl::string_view program) {
  CliOptions opts;
  opts.api_sock = DefaultApiSocket(program);
  // As Firecracker's parser: --help or --version anywhere wins.
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") opts.help = true;
    if (arg == "--version") opts.version = true;
  }
  if (opts.help || opts.version) return opts;

  std::map<std::string, std::string*> values = {
      {"--config-file", &opts.config_file},
      {"--api-sock", &opts.api_sock},
      {"--id", &opts.id},
      {"--level", &opts.level},
      {"--module", &opts.module},
      {"--log-path", &opts.log_path},
      {"--metrics-path", &opts.metrics_path},
      {"--seccomp-filter", &opts.seccomp_filter},
      {"--describe-snapshot", &opts.describe_snapshot},
      {"--metadata", &opts.metadata},
  };
  // Numbers: read as text, checked below (an empty one too).
  std::map<std::string, std::string> numbers;
  std::set<std::string> given;
  for (const char* name : {"--http-api-max-payload-size", "--mmds-size-limit", "--start-time-us",
                           "--start-time-cpu-us", "--parent-cpu-time-us"}) {
    values.emplace(name, &numbers[name]);
  }
  const std::map<std::string, bool*> flags = {
      {"--no-api", &opts.no_api},
      {"--no-seccomp", &opts.no_seccomp},
      {"--boot-timer", &opts.boot_timer},
      {"--merge-guest-memory", &opts.merge_guest_memory},
      {"--show-level", &opts.show_level},
      {"--show-log-origin", &opts.show_log_origin},
      {"--snapshot-version", &opts.snapshot_version},
  };
  for (size_t i = 0; i < args.size(); i++) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    if (auto v = values.find(arg); v != values.end()) {
      given.insert(arg);
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
    } else if (auto r = Refused().find(arg); r != Refused().end()) {
      return absl::InvalidArgumentError(absl::StrCat(arg, " is not supported: ", r->second));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument '", args[i], "'"));
    }
  }
  if (const std::string& max = numbers["--http-api-max-payload-size"];
      given.count("--http-api-max-payload-size")) {
    absl::StatusOr<uint64_t> n = Number("--http-api-max-payload-size", max);
    if (!n.ok() || *n == 0 || *n > (64u << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--http-api-max-payload-size '", max, "' must be 1 to 67108864 bytes"));
    }
    opts.http_api_max_payload_size = *n;
  }
  for (auto [name, field] : {std::pair{"--mmds-size-limit", &opts.mmds_size_limit},
                             std::pair{"--start-time-us", &opts.start_time_us},
                             std::pair{"--start-time-cpu-us", &opts.start_time_cpu_us},
                             std::pair{"--parent-cpu-time-us", &opts.parent_cpu_time_us}}) {
    if (!given.count(name)) continue;
    absl::StatusOr<uint64_t> n = Number(name, numbers[name]);
    if (!n.ok()) return n.status();
    *field = *n;
  }
  if (!ValidInstanceId(opts.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--id '", opts.id, "' must be 1-64 letters, digits or '-'"));
  }
  std::optional<std::string> level = CanonicalLevel(opts.level);
  if (!level || !ParseLogLevel(*level)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--level '", opts.level, "' must be Error, Warning, Info, Debug, Trace or Off"));
  }
  opts.level = *level;
  if (absl::Status st = CheckLogModule(opts.module, "--module"); !st.ok()) return st;
  if (opts.no_seccomp && !opts.seccomp_filter.empty()) {
    return absl::InvalidArgumentError("--no-seccomp and --seccomp-filter exclude each other");
  }
  if (opts.no_api && opts.config_file.empty()) {
    return absl::InvalidArgumentError("--no-api needs --config-file");
  }
  return opts;
}

}  // namespace ember
