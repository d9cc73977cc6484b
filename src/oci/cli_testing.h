// The fixture and fakes ember-oci's command-line tests share: the binary
// run as the shim runs it, a record as create and start leave it, and
// sockets standing in for a VM's vsock (an agent behind it).
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <rapidjson/document.h>

#include <gtest/gtest.h>

#include "src/agent/protocol.h"
#include "src/oci/state.h"
#include "src/oci/vm.h"

namespace ember::oci::testing {

struct Outcome {
  int status;
  std::string log_msg;  // the last JSON line's "msg"
  std::string out;
};

inline std::string FirstLine(const std::string& path) {
  std::string line;
  std::getline(std::ifstream(path), line);
  return line;
}

class OciCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ember-oci-cli-XXXXXX";
    dir_ = mkdtemp(tmpl);
    root_ = dir_ + "/root";
    bundle_ = dir_ + "/bundle";
    mkdir(bundle_.c_str(), 0755);
  }
  void TearDown() override { (void)!system(("rm -rf " + dir_).c_str()); }

  Outcome Run(const std::string& args) {
    std::string log = dir_ + "/log.json";
    unlink(log.c_str());
    std::string cmd = std::string(EMBER_OCI_BIN) + " --root " + root_ + " --log " + log +
                      " --log-format json " + args + " > " + dir_ + "/out 2>/dev/null";
    int st = system(cmd.c_str());
    Outcome o{WEXITSTATUS(st), "", ""};
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line)) {
      rapidjson::Document doc;
      doc.Parse(line.c_str());
      EXPECT_TRUE(doc.IsObject() && doc.HasMember("level") && doc.HasMember("time")) << line;
      if (doc.IsObject() && doc.HasMember("msg")) o.log_msg = doc["msg"].GetString();
    }
    std::stringstream out;
    out << std::ifstream(dir_ + "/out").rdbuf();
    o.out = out.str();
    return o;
  }

  // A running container "c1" whose monitor is this test, as `create` and
  // `start` would have recorded it; `more` sets the rest.
  ember::oci::ContainerRecord RecordRunning(
      const std::function<void(ember::oci::ContainerRecord*)>& more) {
    mkdir(root_.c_str(), 0711);
    mkdir((root_ + "/c1").c_str(), 0700);
    ember::oci::ContainerRecord r;
    r.id = "c1";
    r.monitor = ember::oci::RefOf(getpid());
    r.started = true;
    more(&r);
    std::ofstream(root_ + "/c1/state.json") << ember::oci::RecordToJson(r);
    return r;
  }

  std::string dir_, root_, bundle_;
};

// Containers created and started through the binary against a fake VMM (a
// script that prints the guest's ready line and sleeps) and the test's fake
// agent on the VM's socket, booting cold without a jail. A container `id`'s
// pid file is <dir_>/<id>.pid.
class OciFakeVmTest : public OciCliTest {
 protected:
  void SetUp() override {
    OciCliTest::SetUp();
    std::ofstream(dir_ + "/ember") << "#!/bin/sh\necho " << ember::oci::kGuestSettled
                                   << "\nexec sleep 600\n";
    chmod((dir_ + "/ember").c_str(), 0755);
    for (const char* file : {"/vmlinux", "/rootfs.ext4"}) std::ofstream(dir_ + file) << "x";
    setenv("EMBER_OCI_VMM", (dir_ + "/ember").c_str(), 1);
    setenv("EMBER_OCI_JAILER", "none", 1);
    setenv("EMBER_OCI_KERNEL", (dir_ + "/vmlinux").c_str(), 1);
    setenv("EMBER_OCI_ROOTFS", (dir_ + "/rootfs.ext4").c_str(), 1);
    setenv("EMBER_OCI_BOOT", "cold", 1);
    mkdir((bundle_ + "/rootfs").c_str(), 0755);
    mkdir((bundle_ + "/rootfs/bin").c_str(), 0755);
    std::ofstream(bundle_ + "/rootfs/bin/server") << "x";
    chmod((bundle_ + "/rootfs/bin/server").c_str(), 0755);
  }
  void TearDown() override {
    StopMonitors();
    for (const char* v : {"EMBER_OCI_VMM", "EMBER_OCI_JAILER", "EMBER_OCI_KERNEL",
                          "EMBER_OCI_ROOTFS", "EMBER_OCI_BOOT"}) {
      unsetenv(v);
    }
    OciCliTest::TearDown();
  }

  // Kills the monitors a failed test left (their VMMs die with them).
  void StopMonitors() {
    DIR* d = opendir(dir_.c_str());
    while (dirent* e = d ? readdir(d) : nullptr) {
      std::string name = e->d_name;
      if (name.size() < 5 || name.compare(name.size() - 4, 4, ".pid") != 0) continue;
      std::string pid = FirstLine(dir_ + "/" + name);
      if (pid.empty()) continue;
      ember::oci::ProcessRef monitor = ember::oci::RefOf(std::stoi(pid));
      if (ember::oci::Alive(monitor)) kill(monitor.pid, SIGKILL);
    }
    if (d) closedir(d);
  }

  static int Sh(const std::string& cmd) { return system((cmd + " >/dev/null 2>&1").c_str()); }

  ember::oci::ProcessRef Monitor(const std::string& id) {
    return ember::oci::RefOf(std::stoi(FirstLine(dir_ + "/" + id + ".pid")));
  }
};

// A listening Unix socket at `path`.
inline int ListenUnix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(fd, 4), 0);
  return fd;
}

// Stands in for a VM's vsock socket with an agent behind it: answers the
// CONNECT line with "OK" and then `bytes` (the agent's frames).
class FakeGuest {
 public:
  // `on_connect`, when given, runs on the connection first.
  FakeGuest(const std::string& path, std::string bytes,
            std::function<void(int)> on_connect = nullptr)
      : bytes_(std::move(bytes)), on_connect_(std::move(on_connect)) {
    listener_ = ListenUnix(path);
    thread_ = std::thread([this] {
      int conn = accept(listener_, nullptr, nullptr);
      if (conn < 0) return;
      char c;
      while (read(conn, &c, 1) == 1 && c != '\n') {
      }
      if (on_connect_) on_connect_(conn);
      std::string answer = "OK 1\n" + bytes_;
      // A client killed meanwhile (a test may kill the monitor) is no SIGPIPE.
      (void)!send(conn, answer.data(), answer.size(), MSG_NOSIGNAL);
      char buf[4096];
      ssize_t n;
      while ((n = read(conn, buf, sizeof(buf))) > 0) received_.append(buf, n);
      close(conn);
    });
  }
  ~FakeGuest() {
    shutdown(listener_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    close(listener_);
  }
  // What the client sent after its CONNECT line, once it has closed.
  std::string Received() {
    if (thread_.joinable()) thread_.join();
    return received_;
  }

 private:
  std::string bytes_;
  std::string received_;
  std::function<void(int)> on_connect_;
  int listener_;
  std::thread thread_;
};

inline std::string AgentFrames(std::vector<std::pair<ember::agent::Type, std::string>> frames) {
  std::string out;
  ember::agent::AppendFrame(&out, ember::agent::Type::kHello,
                            ember::agent::EncodeU32(ember::agent::kVersion));
  for (const auto& [type, payload] : frames) ember::agent::AppendFrame(&out, type, payload);
  return out;
}

// The EXEC request among what a client sent (FakeGuest::Received).
inline ember::agent::ExecRequest ExecIn(const std::string& sent) {
  ember::agent::FrameDecoder decoder(ember::agent::FrameDecoder::From::kClient);
  decoder.Feed(sent);
  ember::agent::Frame frame;
  std::string error;
  ember::agent::ExecRequest request;
  while (decoder.Next(&frame, &error) == ember::agent::FrameDecoder::Result::kFrame) {
    if (frame.type == ember::agent::Type::kExec &&
        ember::agent::DecodeExec(frame.payload, &request, &error)) {
      return request;
    }
  }
  ADD_FAILURE() << "no EXEC: " << error;
  return request;
}

}  // namespace ember::oci::testing
