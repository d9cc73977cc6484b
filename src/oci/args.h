// ember-oci's command line: runc's, as containerd's shim (go-runc) writes
// it. Global options come before the command; a command's options may come
// before or after its arguments. "--name value" and "--name=value" both
// work, as in runc's flag parser.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::oci {

// runc's exit codes for a bad command line.
inline constexpr int kExitError = 1;           // any failure, unknown flags too
inline constexpr int kExitUnknownCommand = 3;  // "No help topic for 'x'"

struct CommandLine {
  // Global options.
  std::string root = "/run/ember-oci";
  std::string log;                  // empty: stderr
  bool log_json = false;            // --log-format json
  bool version = false;             // --version / -v
  bool help = false;                // --help / -h, or no command
  std::string command;              // "create", "start", ...
  std::map<std::string, std::vector<std::string>> options;  // long name -> values
  std::vector<std::string> args;    // positional, after the command

  bool Has(const std::string& name) const { return options.count(name) > 0; }
  // The last value of a valued option, or "".
  std::string Value(const std::string& name) const;
};

// The failure: runc's message and exit code.
struct UsageError {
  int exit_code = kExitError;
  std::string message;
};

// Parses argv[1..]. On a bad line fills *error and returns false.
bool ParseCommandLine(const std::vector<std::string>& argv, CommandLine* out, UsageError* error);

// The commands ember-oci has, for `--help`.
std::vector<std::string> CommandNames();

}  // namespace ember::oci
