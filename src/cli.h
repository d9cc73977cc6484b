// Ember's command line: Firecracker's flags, those Ember can honour, and a
// clear refusal for the ones it cannot (--module, --enable-pci).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "src/common/instance_id.h"

namespace ember {

struct CliOptions {
  std::string config_file;
  bool no_api = false;
  std::string api_sock;  // default: DefaultApiSocket(program name)
  std::string id = "anonymous-instance";
  // The logger (as PUT /logger): Error, Warning, Info (default), Debug,
  // Trace or Off, written here as Ember's ParseLogLevel spells it.
  std::string level = "Info";
  std::string log_path;  // a file or FIFO; empty: stderr
  bool show_level = false;
  bool show_log_origin = false;
  std::string module;  // as logger.module; empty: every line
  std::string metrics_path;  // a file or FIFO (as PUT /metrics); empty: none
  size_t http_api_max_payload_size = 51200;
  // MMDS's store limit; absent: http_api_max_payload_size, as Firecracker.
  std::optional<uint64_t> mmds_size_limit;
  std::string metadata;  // a JSON file MMDS's store starts with; empty: none
  bool no_seccomp = false;
  bool boot_timer = false;
  std::string seccomp_filter;  // empty: the built-in filters
  // Ember's own, off by default (Firecracker has no such setting): guest
  // memory advised MADV_MERGEABLE for the host's KSM (guest_memory.h says
  // why it is off: cross-VM page-merge timing side channels).
  bool merge_guest_memory = false;
  // From Firecracker's jailer (ember-jailer passes them too): when it
  // started (CLOCK_MONOTONIC), this process's CPU time at exec, and the
  // CPU the jailer spent; Ember logs its start-up cost from them.
  std::optional<uint64_t> start_time_us;
  std::optional<uint64_t> start_time_cpu_us;
  std::optional<uint64_t> parent_cpu_time_us;
  // Each of these prints and exits; as in Firecracker, --help or
  // --version anywhere skips the rest of the command line.
  bool help = false;
  bool version = false;
  bool snapshot_version = false;
  std::string describe_snapshot;  // a state file
};

// Firecracker's default socket for a binary named firecracker* (as Kata
// expects of a copy of Ember installed under that name), Ember's for any
// other name. `program` is argv[0].
std::string DefaultApiSocket(absl::string_view program);

// What --version prints. Installed as firecracker*, Ember answers as
// Firecracker does ("Firecracker v<API level>" first: Kata's driver takes
// the second word and wants at least 0.21.1), then its own version.
std::string VersionText(absl::string_view program);

// Parses argv[1..]; accepts "--opt value" and "--opt=value". `program`
// (argv[0]) chooses the default API socket.
absl::StatusOr<CliOptions> ParseCli(const std::vector<std::string>& args,
                                    absl::string_view program = "ember");

extern const char kUsage[];

}  // namespace ember
