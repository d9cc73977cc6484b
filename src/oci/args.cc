#include "src/oci/args.h"

#include <algorithm>

namespace ember::oci {
namespace {

struct Option {
  const char* name;   // long name
  const char* alias;  // one-letter name or nullptr
  bool takes_value;
};

struct CommandSpec {
  const char* name;
  std::vector<Option> options;
  size_t min_args;  // positional arguments needed
  size_t max_args;
};

const std::vector<Option>& GlobalOptions() {
  static const std::vector<Option> options = {
      {"root", nullptr, true},       {"log", nullptr, true},
      {"log-format", nullptr, true}, {"debug", nullptr, false},
      {"systemd-cgroup", nullptr, false}, {"rootless", nullptr, true},
      {"criu", nullptr, true},       {"version", "v", false},
      {"help", "h", false},
  };
  return options;
}

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> commands = {
      {"create",
       {{"bundle", "b", true}, {"pid-file", nullptr, true}, {"console-socket", nullptr, true},
        {"no-pivot", nullptr, false}, {"no-new-keyring", nullptr, false},
        {"preserve-fds", nullptr, true}, {"detach", "d", false}},
       1, 1},
      {"start", {}, 1, 1},
      {"state", {}, 1, 1},
      {"kill", {{"all", "a", false}}, 1, 2},
      {"delete", {{"force", "f", false}}, 1, 1},
      {"exec",
       {{"process", "p", true}, {"detach", "d", false}, {"pid-file", nullptr, true},
        {"console-socket", nullptr, true}, {"tty", "t", false}, {"preserve-fds", nullptr, true}},
       1, 1},
      {"pause", {}, 1, 1},
      {"update", {{"resources", "r", true}}, 1, 1},
      {"resume", {}, 1, 1},
      {"ps", {{"format", "f", true}}, 1, 64},
      {"list", {{"format", "f", true}, {"quiet", "q", false}}, 0, 0},
      {"features", {}, 0, 0},
      // Ember's own: build the template snapshot (of a size other than the
      // default with both of these).
      {"template", {{"vcpus", nullptr, true}, {"mem-mib", nullptr, true}}, 0, 0},
  };
  return commands;
}

const Option* Find(const std::vector<Option>& options, const std::string& name) {
  for (const auto& o : options) {
    if (name == o.name || (o.alias && name == o.alias)) return &o;
  }
  return nullptr;
}

// Takes the option at argv[*i] (which starts with '-'); false with runc's
// message when it is not one of `options`.
bool TakeOption(const std::vector<std::string>& argv, size_t* i,
                const std::vector<Option>& options,
                std::map<std::string, std::vector<std::string>>* out, UsageError* error) {
  const std::string& arg = argv[*i];
  std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
  std::string name = body, value;
  bool has_value = false;
  if (size_t eq = body.find('='); eq != std::string::npos) {
    name = body.substr(0, eq);
    value = body.substr(eq + 1);
    has_value = true;
  }
  const Option* o = Find(options, name);
  if (!o) {
    error->message = "flag provided but not defined: -" + name;
    return false;
  }
  if (o->takes_value && !has_value) {
    if (*i + 1 >= argv.size()) {
      error->message = "flag needs an argument: -" + name;
      return false;
    }
    value = argv[++*i];
  }
  (*out)[o->name].push_back(value);
  return true;
}

}  // namespace

std::string CommandLine::Value(const std::string& name) const {
  auto it = options.find(name);
  return it == options.end() || it->second.empty() ? "" : it->second.back();
}

std::vector<std::string> CommandNames() {
  std::vector<std::string> names;
  for (const auto& c : Commands()) names.push_back(c.name);
  return names;
}

bool ParseCommandLine(const std::vector<std::string>& argv, CommandLine* out, UsageError* error) {
  std::map<std::string, std::vector<std::string>> global;
  size_t i = 0;
  for (; i < argv.size() && argv[i].size() > 1 && argv[i][0] == '-'; ++i) {
    if (argv[i] == "--") {
      ++i;
      break;
    }
    if (!TakeOption(argv, &i, GlobalOptions(), &global, error)) return false;
  }
  auto last = [&](const char* name) { return global[name].empty() ? "" : global[name].back(); };
  if (!global["root"].empty()) out->root = last("root");
  out->log = last("log");
  if (!global["log-format"].empty()) {
    std::string format = last("log-format");
    if (format != "json" && format != "text") {
      error->message = "invalid log-format: " + format;
      return false;
    }
    out->log_json = format == "json";
  }
  out->version = global.count("version") > 0;
  out->help = global.count("help") > 0;
  if (out->version || out->help) return true;
  if (i == argv.size()) {
    out->help = true;
    return true;
  }
  out->command = argv[i++];
  auto spec = std::find_if(Commands().begin(), Commands().end(),
                           [&](const CommandSpec& c) { return out->command == c.name; });
  if (spec == Commands().end()) {
    error->exit_code = kExitUnknownCommand;
    error->message = "No help topic for '" + out->command + "'";
    return false;
  }
  bool only_args = false;
  for (; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (!only_args && arg == "--") {
      only_args = true;
    } else if (!only_args && arg.size() > 1 && arg[0] == '-') {
      if (!TakeOption(argv, &i, spec->options, &out->options, error)) return false;
    } else {
      out->args.push_back(arg);
    }
  }
  if (out->args.size() < spec->min_args) {
    error->message = out->args.empty() ? "container id cannot be empty"
                                       : "\"" + out->command + "\" requires more arguments";
    return false;
  }
  if (out->args.size() > spec->max_args) {
    error->message = "\"" + out->command + "\" takes at most " +
                     std::to_string(spec->max_args) + " argument(s)";
    return false;
  }
  return true;
}

}  // namespace ember::oci
