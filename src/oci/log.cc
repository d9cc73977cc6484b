#include "src/oci/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "src/oci/state.h"

namespace ember::oci {

std::string Quoted(const std::string& message) {
  std::string out = "\"";
  for (unsigned char c : message) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

void Logger::Write(const char* level, const std::string& message) const {
  std::string time = NowRfc3339();
  time = time.substr(0, 19) + "Z";
  if (!path.empty()) {
    std::string line;
    if (json) {
      rapidjson::StringBuffer buffer;
      rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
      w.StartObject();
      w.Key("level");
      w.String(level);
      w.Key("msg");
      w.String(message.c_str());
      w.Key("time");
      w.String(time.c_str());
      w.EndObject();
      line = std::string(buffer.GetString()) + "\n";
    } else {
      line = "time=\"" + time + "\" level=" + level + " msg=" + Quoted(message) + "\n";
    }
    int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      (void)!write(fd, line.data(), line.size());
      close(fd);
    }
  }
  if (std::string(level) == "error") {
    std::string out = path.empty()
                          ? "time=\"" + time + "\" level=error msg=" + Quoted(message) + "\n"
                          : message + "\n";
    (void)!write(2, out.data(), out.size());
  }
}

}  // namespace ember::oci
