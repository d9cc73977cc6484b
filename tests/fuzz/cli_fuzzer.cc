// libFuzzer target: ember's command line (the input split at NUL bytes
// into arguments) through ParseCli. Checked beyond ASan and UBSan, for
// every accepted command line, what the rest of main relies on: a valid
// instance id, a log level the logger knows, a payload limit of 1 byte to
// 64 MiB, --no-seccomp and --seccomp-filter not both, and --no-api only
// with a configuration file (or --help/--version).
#include "src/cli.h"
#include "src/common/log.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  std::vector<std::string> args = in.Args();
  absl::StatusOr<CliOptions> parsed = ParseCli(args);
  if (!parsed.ok()) return 0;
  const CliOptions& o = *parsed;
  if (!ValidInstanceId(o.id)) Fail("an accepted id is not valid");
  if (!ParseLogLevel(o.level)) Fail("an accepted level is not a level");
  if (o.http_api_max_payload_size == 0 || o.http_api_max_payload_size > (64u << 20)) {
    Fail("a payload limit out of range");
  }
  if (o.no_seccomp && !o.seccomp_filter.empty()) Fail("--no-seccomp with --seccomp-filter");
  if (o.no_api && o.config_file.empty() && !o.help && !o.version) Fail("--no-api without config");
  return 0;
}
