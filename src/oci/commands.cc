#include "src/oci/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"

namespace ember::oci::cli {

Logger logger;

int Error(const std::string& message, int code) {
  logger.Write("error", message);
  return code;
}

std::string Dir(const CommandLine& cl, const std::string& id) { return cl.root + "/" + id; }

agent::Fd LockContainer(const CommandLine& cl, const std::string& id) {
  if (!ValidId(id)) return agent::Fd();
  agent::Fd fd(open((Dir(cl, id) + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  while (fd.valid() && flock(fd.get(), LOCK_EX) != 0 && errno == EINTR) {
  }
  return fd;
}

bool WriteFileAtomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) return false;
  }
  return rename(tmp.c_str(), path.c_str()) == 0;
}

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream in(path);
  *ok = static_cast<bool>(in);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::StatusOr<ContainerRecord> Load(const CommandLine& cl, const std::string& id) {
  if (!ValidId(id)) return absl::NotFoundError("container does not exist");
  bool ok;
  std::string text = ReadFile(Dir(cl, id) + "/state.json", &ok);
  if (!ok) return absl::NotFoundError("container does not exist");
  return RecordFromJson(text);
}

bool Save(const CommandLine& cl, const ContainerRecord& r) {
  return WriteFileAtomic(Dir(cl, r.id) + "/state.json", RecordToJson(r));
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

bool ParseSize(const std::string& text, uint32_t min, uint32_t max, uint32_t* out) {
  uint32_t v;
  if (!absl::SimpleAtoi(text, &v) || v < min || v > max) return false;
  *out = v;
  return true;
}

bool WritePidFile(const std::string& path, pid_t pid) {
  return path.empty() || WriteFileAtomic(path, std::to_string(pid));
}

}  // namespace ember::oci::cli
