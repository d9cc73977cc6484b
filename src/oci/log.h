// ember-oci's log (--log, --log-format), as runc's: one line per message,
// JSON or logrus's text form; errors also on stderr, as runc prints them.
#pragma once

#include <string>

namespace ember::oci {

struct Logger {
  std::string path;  // "" : errors go to stderr only
  bool json = false;
  // Opens the file for each line, so a forked monitor may write too.
  void Write(const char* level, const std::string& message) const;
};

// `message` quoted as logrus quotes it (Go's strconv.Quote, for the text
// format): backslashes, quotes and control bytes escaped.
std::string Quoted(const std::string& message);

}  // namespace ember::oci
