// ember: boots one microVM and exits with its exit code (see exit_code.h).
#include <cstdio>

#include "api/vm_config_json.h"
#include "src/cli.h"
#include "src/common/log.h"
#include "src/vmm/exit_code.h"
#include "src/vmm/vm.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0"
#endif

namespace ember {
namespace {

LogLevel ToLogLevel(const std::string& level) {
  if (level == "Error") return LogLevel::kError;
  if (level == "Warning") return LogLevel::kWarn;
  if (level == "Debug") return LogLevel::kDebug;
  return LogLevel::kInfo;
}

bool IsConfigError(const absl::Status& st) {
  return st.code() == absl::StatusCode::kInvalidArgument ||
         st.code() == absl::StatusCode::kNotFound ||
         st.code() == absl::StatusCode::kOutOfRange ||
         st.code() == absl::StatusCode::kFailedPrecondition ||
         st.code() == absl::StatusCode::kPermissionDenied;
}

int Main(int argc, char** argv) {
  absl::StatusOr<CliOptions> opts = ParseCli(std::vector<std::string>(argv + 1, argv + argc));
  if (!opts.ok()) {
    std::fprintf(stderr, "ember: %s\n\n%s", std::string(opts.status().message()).c_str(), kUsage);
    return kExitArgParsing;
  }
  if (opts->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (opts->version) {
    std::printf("Ember v%s\n", EMBER_VERSION);
    return kExitOk;
  }
  SetLogLevel(ToLogLevel(opts->level));
  if (!opts->no_api) {
    // The HTTP API is its own piece of work (issue 4); say so plainly.
    std::fprintf(stderr,
                 "ember: this build has no HTTP API yet; run with --no-api --config-file FILE\n");
    return kExitArgParsing;
  }
  LOG_INFO("Ember v%s starting, instance %s", EMBER_VERSION, opts->id);

  absl::StatusOr<VmConfig> config = api::LoadVmConfigFile(opts->config_file);
  if (!config.ok()) {
    LOG_ERROR("bad configuration: %s", config.status().message());
    return kExitBadConfiguration;
  }
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(*config, ConsoleIo{});
  if (!vm.ok()) {
    LOG_ERROR("cannot build the microVM: %s", vm.status().message());
    return IsConfigError(vm.status()) ? kExitBadConfiguration : kExitGenericError;
  }
  return (*vm)->Run();
}

}  // namespace
}  // namespace ember

int main(int argc, char** argv) { return ember::Main(argc, argv); }
