// The agent and ember-exec end to end on the host: the real binaries, the
// agent on a Unix socket (--listen unix:PATH) instead of vsock.
#include <linux/limits.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "src/agent/e2e_testing.h"
#include "src/agent/fd.h"
#include "src/agent/protocol.h"
#include "src/agent/sync_testing.h"

namespace ember::agent {
namespace {

using testing::Finish;
using testing::Process;
using testing::ReadUntil;
using testing::Result;
using testing::Start;

int ConnectUnix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool Gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

template <typename F>
bool WaitFor(F done, int ms = 10000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // a command may leave before reading its stdin
    char tmpl[] = "/tmp/ember-agent-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    char real[PATH_MAX];
    ASSERT_NE(realpath(tmpl, real), nullptr);
    dir_ = real;
    socket_ = dir_ + "/agent.sock";
    // An inheritable descriptor the agent must not pass on to commands.
    int stray = dup(2);
    agent_ = Start({EMBER_AGENT_BIN, "--listen", "unix:" + socket_});
    close(stray);
    ASSERT_TRUE(WaitFor([&] {
      int fd = ConnectUnix(socket_);
      if (fd >= 0) close(fd);
      return fd >= 0;
    })) << "the agent did not start listening";
  }

  void TearDown() override {
    kill(agent_.pid, SIGTERM);
    Result r = Finish(agent_);
    EXPECT_EQ(r.status, 0) << r.err;
    std::string rm = "rm -rf " + dir_;
    (void)!system(rm.c_str());
  }

  std::vector<std::string> ExecArgs(std::vector<std::string> options,
                                    const std::vector<std::string>& command) {
    std::vector<std::string> argv = {EMBER_EXEC_BIN, "--unix", socket_};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }

  Result Exec(const std::vector<std::string>& command, const std::string& input = "",
              std::vector<std::string> options = {}) {
    return Finish(Start(ExecArgs(options, command)), input);
  }

  long AgentRssKib() {
    std::ifstream status("/proc/" + std::to_string(agent_.pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

  std::string dir_, socket_;
  Process agent_;
};

std::string RandomBytes(size_t n) {
  std::mt19937_64 rng(42);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

TEST_F(AgentTest, ExitStatusesComeBack) {
  EXPECT_EQ(Exec({"true"}).status, 0);
  EXPECT_EQ(Exec({"false"}).status, 1);
  Result r = Exec({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST_F(AgentTest, KilledBySignalIs128PlusSigno) {
  EXPECT_EQ(Exec({"sh", "-c", "kill -9 $$"}).status, 128 + 9);
}

TEST_F(AgentTest, TenMebibytesOfStdoutArriveIntact) {
  std::string data = RandomBytes(10 << 20);
  std::ofstream(dir_ + "/big", std::ios::binary) << data;
  Result r = Exec({"cat", dir_ + "/big"});
  EXPECT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(r.out.size(), data.size());
  EXPECT_TRUE(r.out == data) << "the output differs from the file";
}

TEST_F(AgentTest, StdinIsForwardedBothWaysAtOnce) {
  std::string data = RandomBytes(1 << 20);
  Result counted = Exec({"wc", "-c"}, data);
  EXPECT_EQ(counted.status, 0) << counted.err;
  EXPECT_EQ(std::stol(counted.out), 1 << 20);
  Result echoed = Exec({"cat"}, data);
  EXPECT_EQ(echoed.status, 0) << echoed.err;
  EXPECT_TRUE(echoed.out == data);
  // Without --no-stdin an empty stdin is an immediate EOF.
  EXPECT_EQ(Exec({"cat"}).out, "");
}

TEST_F(AgentTest, EnvironmentAndWorkingDirectoryApply) {
  Result r = Exec({"sh", "-c", "echo \"$FOO|$BAR\"; pwd"}, "",
                  {"--env", "FOO=bar baz", "--env", "BAR=", "--cwd", dir_});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "bar baz|\n" + dir_ + "\n");
  // The agent's own environment is the base: PATH finds sh above.
}

// More than one 64 KiB frame's worth: EXEC frames may be larger than the
// others (Kubernetes' service variables make environments this big).
TEST_F(AgentTest, AnEnvironmentOfHalfAMebibyteArrives) {
  std::vector<std::string> options;
  for (int i = 0; i < 8000; ++i) {
    options.push_back("--env");
    options.push_back("SERVICE_" + std::to_string(i) + "_PORT_8080_TCP_ADDR=10.96.12." +
                      std::to_string(i % 250) + std::string(20, 'x'));
  }
  Result r = Exec({"sh", "-c", "env | grep -c ^SERVICE_; echo $SERVICE_7999_PORT_8080_TCP_ADDR"},
                  "", options);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "8000\n10.96.12.249" + std::string(20, 'x') + "\n");
}

TEST_F(AgentTest, TerminalCarriesOutputAndInputWithItsSize) {
  // One stream: stdout and stderr both; the terminal translates \n.
  Result r = Exec({"sh", "-c", "test -t 0 && test -t 1 && echo tty; echo err >&2; exit 4"}, "",
                  {"--tty", "--no-stdin"});
  EXPECT_EQ(r.status, 4);
  EXPECT_EQ(r.out, "tty\r\nerr\r\n");
  EXPECT_EQ(r.err, "");
  // Input reaches it through the line discipline (echoed), and the size
  // ember-exec sends before the start is there (none here: 0 0).
  r = Exec({"sh", "-c", "read line; echo \"got $line\"; stty size"}, "hello\n", {"--tty"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("got hello\r\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 0"), std::string::npos) << r.out;
}

TEST_F(AgentTest, ContainerProcessGetsItsRootUserAndOnlyItsEnvironment) {
  if (geteuid() != 0) GTEST_SKIP() << "chroot and setuid need root";
  // A root with a static busybox in it (Debian's busybox-static).
  std::string root = dir_ + "/root";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ASSERT_EQ(system(("cp /bin/busybox " + root + "/busybox").c_str()), 0);
  ASSERT_EQ(mkdir((root + "/work").c_str(), 0777), 0);
  Result r = Exec({"/busybox", "sh", "-c", "/busybox id -u; /busybox id -G; /busybox pwd; "
                   "/busybox ls /"},
                  "", {"--root", root, "--user", "1000:100:10,20", "--env", "ONLY=1",
                       "--cwd", "/work"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1000\n100 10 20\n/work\nbusybox\nwork\n");
  r = Exec({"/busybox", "env"}, "", {"--root", root, "--user", "0:0", "--env", "ONLY=1"});
  EXPECT_EQ(r.out, "ONLY=1\n");
  // A root that is not there, and a program that is not in it.
  r = Exec({"/busybox", "true"}, "", {"--root", dir_ + "/none", "--user", "0:0"});
  EXPECT_EQ(r.status, 125);
  EXPECT_NE(r.err.find("cannot enter the container's root"), std::string::npos) << r.err;
  r = Exec({"sh", "true"}, "", {"--root", root, "--user", "0:0"});
  EXPECT_EQ(r.status, 127) << r.err;
}

TEST_F(AgentTest, CommandsInheritOnlyTheirStdio) {
  EXPECT_EQ(Exec({"ls", "/proc/self/fd"}).out, "0\n1\n2\n3\n");  // 3: ls's own
}

TEST_F(AgentTest, MissingProgramAndDirectoryGiveClearErrors) {
  Result missing = Exec({"no-such-program-xyz", "arg"});
  EXPECT_EQ(missing.status, 127);
  EXPECT_NE(missing.err.find("cannot run no-such-program-xyz: No such file or directory"),
            std::string::npos)
      << missing.err;
  std::string script = dir_ + "/not-executable";
  std::ofstream(script) << "#!/bin/sh\n";
  Result denied = Exec({script});
  EXPECT_EQ(denied.status, 126);
  EXPECT_NE(denied.err.find("Permission denied"), std::string::npos) << denied.err;
  Result cwd = Exec({"true"}, "", {"--cwd", dir_ + "/nope"});
  EXPECT_EQ(cwd.status, 125);
  EXPECT_NE(cwd.err.find("cannot change to directory"), std::string::npos) << cwd.err;
}

// A client that stops reading holds the command back (the agent's memory
// stays small); one that goes away takes the command's whole group with it,
// and the agent serves the next request.
TEST_F(AgentTest, ClientThatLeavesTakesTheCommandWithIt) {
  std::string pidfile = dir_ + "/pid";
  Process client = Start(ExecArgs(
      {"--no-stdin"}, {"sh", "-c", "echo $$ > " + pidfile + "; sleep 1000 & exec yes"}));
  ASSERT_TRUE(WaitFor([&] { return std::ifstream(pidfile).peek() != EOF; }));
  pid_t pid = 0;
  std::ifstream(pidfile) >> pid;
  ASSERT_GT(pid, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // `yes` fills every buffer
  EXPECT_LT(AgentRssKib(), 32 * 1024);
  EXPECT_FALSE(Gone(pid));
  kill(client.pid, SIGKILL);
  Finish(client);  // reads what had been sent, then EOF
  EXPECT_TRUE(WaitFor([&] { return Gone(pid); })) << "the command outlived its client";
  EXPECT_TRUE(WaitFor([&] { return Gone(-pid); })) << "its background job outlived it";
  EXPECT_EQ(Exec({"echo", "next"}).out, "next\n");
}

TEST_F(AgentTest, SignalsAreForwarded) {
  Process client = Start(ExecArgs({"--no-stdin"}, {"sh", "-c", "echo ready; exec sleep 1000"}));
  EXPECT_EQ(ReadUntil(client.out, "ready\n"), "ready\n");
  kill(client.pid, SIGTERM);
  EXPECT_EQ(Finish(client).status, 128 + SIGTERM);
}

// A reader that stops reading holds up the output only: a signal still
// reaches the command (ember-exec used to block in its write, and so did a
// container's monitor on a full terminal, with `kill` waiting behind it).
TEST_F(AgentTest, SignalsGetThroughWhileNobodyReadsTheOutput) {
  std::string mark = dir_ + "/termed";
  Process p = Start(ExecArgs({"--no-stdin"}, {"sh", "-c", "trap 'touch " + mark +
                                                           "; exit 7' TERM; yes"}));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the pipes fill up
  kill(p.pid, SIGTERM);
  EXPECT_TRUE(WaitFor([&] { return access(mark.c_str(), F_OK) == 0; }, 10000))
      << "the signal waited for the reader";
  Result r = Finish(p);  // reads what is left
  EXPECT_EQ(r.status, 7) << r.err;
}

// STDIN stays within the agent's WINDOW, so the agent always reads the
// connection: a signal behind endless input the command never reads gets
// through (it waited behind the stdin before).
TEST_F(AgentTest, SignalsGetThroughWhileTheCommandIgnoresItsStdin) {
  std::string mark = dir_ + "/termed";
  std::vector<std::string> argv =
      ExecArgs({}, {"sh", "-c", "trap 'touch " + mark + "; exit 7' TERM; sleep 1000"});
  argv.insert(argv.begin(), {"/bin/sh", "-c", "exec \"$0\" \"$@\" < /dev/zero"});
  Process p = Start(argv);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // every queue fills
  kill(p.pid, SIGTERM);
  EXPECT_TRUE(WaitFor([&] { return access(mark.c_str(), F_OK) == 0; }, 10000))
      << "the signal waited behind the stdin";
  Result r = Finish(p);
  EXPECT_EQ(r.status, 7) << r.err;
}

TEST_F(AgentTest, TimeoutKillsTheCommand) {
  Result r = Exec({"sleep", "1000"}, "", {"--timeout", "0.5"});
  EXPECT_EQ(r.status, 124);
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

TEST_F(AgentTest, TwentyConcurrentExecs) {
  std::vector<Process> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(Start(ExecArgs(
        {"--no-stdin"}, {"sh", "-c", "sleep 0.2; echo " + std::to_string(i) + "; exit " +
                                         std::to_string(i)})));
  }
  for (int i = 0; i < 20; ++i) {
    Result r = Finish(clients[i]);
    EXPECT_EQ(r.status, i) << r.err;
    EXPECT_EQ(r.out, std::to_string(i) + "\n");
  }
}

// Sends raw bytes as a client would and returns everything the agent
// answered before it closed the connection.
std::string RawExchange(const std::string& socket, const std::string& bytes) {
  Fd fd(ConnectUnix(socket));
  if (!fd.valid()) return "<no connection>";
  (void)!send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
  shutdown(fd.get(), SHUT_WR);  // what a vanished client looks like, after its bytes
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd.get(), buf, sizeof(buf))) > 0) got.append(buf, n);
  return got;
}

std::string Frames(std::initializer_list<std::pair<Type, std::string>> frames) {
  std::string out;
  for (const auto& [type, payload] : frames) AppendFrame(&out, type, payload);
  return out;
}

TEST_F(AgentTest, BadClientsLoseOnlyTheirConnection) {
  std::string hello = Frames({{Type::kHello, EncodeU32(kVersion)}});
  // Oversized, unknown type, wrong first frame, wrong version, bad EXEC.
  EXPECT_NE(RawExchange(socket_, hello + std::string("\xff\xff\xff\xff\x03", 5)).find("exceeds"),
            std::string::npos);
  EXPECT_NE(RawExchange(socket_, hello + std::string("\0\0\0\0\x63", 5)).find("unknown frame"),
            std::string::npos);
  // SYNC's own maximum (2 MiB, above the 64 KiB of the others), one past it.
  std::string sync_header = EncodeU32(kMaxSyncPayload + 1) + std::string(1, '\x07');
  EXPECT_NE(RawExchange(socket_, hello + sync_header).find("exceeds"), std::string::npos);
  EXPECT_NE(RawExchange(socket_, Frames({{Type::kStdin, "x"}})).find("expected HELLO"),
            std::string::npos);
  EXPECT_NE(RawExchange(socket_, Frames({{Type::kHello, EncodeU32(99)}})).find("version 99"),
            std::string::npos);
  EXPECT_NE(RawExchange(socket_, hello + Frames({{Type::kExec, "junk"}})).find("malformed"),
            std::string::npos);
  // STDIN past the WINDOW the agent gave.
  ExecRequest reader;
  reader.flags = ExecRequest::kFlagStdin;
  reader.argv = {"sleep", "1000"};
  std::string flood = hello + Frames({{Type::kExec, EncodeExec(reader)}});
  // Twice the window: the command's pipe takes 64 KiB of it.
  for (uint32_t sent = 0; sent <= 2 * kStdinWindow; sent += kMaxPayload) {
    AppendFrame(&flood, Type::kStdin, std::string(kMaxPayload, 'x'));
  }
  EXPECT_NE(RawExchange(socket_, flood).find("STDIN past its WINDOW"), std::string::npos);
  // STDIN without the stdin flag: the command is never started.
  ExecRequest sleep;
  sleep.argv = {"sleep", "1000"};
  std::string got = RawExchange(
      socket_, hello + Frames({{Type::kExec, EncodeExec(sleep)}, {Type::kStdin, "x"}}));
  EXPECT_NE(got.find("protocol error"), std::string::npos);
  // A connection that just closes, one that sends half a header.
  RawExchange(socket_, "");
  RawExchange(socket_, std::string("\x01\0", 2));
  EXPECT_EQ(Exec({"echo", "alive"}).out, "alive\n");
}

// One request on a connection of its own, as ember-exec would send it but
// with any field set: its STDOUT (and ERROR) text and its EXIT.
struct Outcome {
  std::string out;
  ExitStatus exit{true, 0};
};
Outcome RunRequest(const std::string& socket, const ExecRequest& request) {
  Fd conn(ConnectUnix(socket));
  std::string wire =
      Frames({{Type::kHello, EncodeU32(kVersion)}, {Type::kExec, EncodeExec(request)}});
  EXPECT_EQ(send(conn.get(), wire.data(), wire.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(wire.size()));
  FrameDecoder decoder(FrameDecoder::From::kAgent);
  char buf[4096];
  ssize_t n;
  while ((n = read(conn.get(), buf, sizeof(buf))) > 0) decoder.Feed(std::string_view(buf, n));
  Outcome got;
  std::string error;
  Frame f;
  while (decoder.Next(&f, &error) == FrameDecoder::Result::kFrame) {
    if (f.type == Type::kStdout || f.type == Type::kError) got.out += f.payload;
    if (f.type == Type::kExit) DecodeExit(f.payload, &got.exit);
  }
  return got;
}

// As a pid namespace ends with its init: once the container's init exits,
// the container's other processes are killed (a background one holding
// the output, an exec'd one), and the init's status comes at once. A
// process outside the container's root is left alone.
TEST_F(AgentTest, TheContainersProcessesEndWithItsInit) {
  if (geteuid() != 0) GTEST_SKIP() << "chroot needs root";
  std::string root = dir_ + "/root";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ASSERT_EQ(system(("cp /bin/busybox " + root + "/busybox").c_str()), 0);
  Process exec = Start(ExecArgs({"--root", root, "--user", "0:0"}, {"/busybox", "sleep", "60"}));
  Process outside = Start(ExecArgs({}, {"sleep", "1000"}));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ExecRequest limited;  // process.rlimits, set before the change of user
  limited.flags = ExecRequest::kFlagContainer;
  limited.argv = {"/busybox", "sh", "-c", "ulimit -n; ulimit -Hn"};
  limited.container.root_dir = root;
  limited.container.uid = 1000;
  limited.container.rlimits = {{RLIMIT_NOFILE, 123, 456}};
  Outcome got_limits = RunRequest(socket_, limited);
  EXPECT_EQ(got_limits.out, "123\n456\n");
  ExecRequest init;
  init.flags = ExecRequest::kFlagContainer | ExecRequest::kFlagInit;
  init.argv = {"/busybox", "sh", "-c", "/busybox sleep 60 & echo started; exit 3"};
  init.container.root_dir = root;
  auto begin = std::chrono::steady_clock::now();
  Outcome got = RunRequest(socket_, init);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(30));
  EXPECT_EQ(got.out, "started\n");
  EXPECT_FALSE(got.exit.signaled);
  EXPECT_EQ(got.exit.value, 3u);
  EXPECT_EQ(Finish(exec).status, 128 + SIGKILL);
  EXPECT_EQ(kill(outside.pid, SIGTERM), 0);
  EXPECT_EQ(Finish(outside).status, 128 + SIGTERM) << "still running until now";
}

// The container's network through the agent binary, in a network
// namespace of the agent's own (never the host's: the request reconfigures
// the interfaces it finds) with a TAP for the guest's virtio-net
// interface: the process sees the address and routes.
TEST_F(AgentTest, TheInitsRequestSetsUpTheNetworkFirst) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  if (access("/usr/bin/unshare", X_OK) != 0 || access("/bin/busybox", X_OK) != 0) {
    GTEST_SKIP() << "needs unshare and busybox (tools/install-deps.sh)";
  }
  std::string root = dir_ + "/root";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ASSERT_EQ(system(("cp /bin/busybox " + root + "/busybox").c_str()), 0);
  ExecRequest r;
  r.flags = ExecRequest::kFlagContainer | ExecRequest::kFlagInit;
  r.argv = {"/busybox", "sh", "-c", "/busybox ip -4 -o addr show guest0; /busybox ip route"};
  r.container.root_dir = root;
  r.container.has_network = true;
  r.container.network.mtu = 1400;
  r.container.network.addresses = {{0x0a1e0005, 24}};  // 10.30.0.5/24
  r.container.network.routes = {{0, 0, 0x0a1e0001, 0, 0}};
  for (bool with_interface : {true, false}) {
    std::string sock = dir_ + (with_interface ? "/net.sock" : "/bare.sock");
    std::string make = with_interface ? "ip tuntap add dev guest0 mode tap && " : "";
    Process agent = Start({"/usr/bin/unshare", "-n", "sh", "-c",
                           make + "exec " + EMBER_AGENT_BIN + " --listen unix:" + sock});
    struct Stop {
      Process agent;
      ~Stop() {
        kill(agent.pid, SIGTERM);
        Finish(agent);
      }
    } stop{agent};
    ASSERT_TRUE(WaitFor([&] {
      int fd = ConnectUnix(sock);
      if (fd >= 0) close(fd);
      return fd >= 0;
    }));
    Outcome got = RunRequest(sock, r);
    if (with_interface) {
      EXPECT_EQ(got.exit.value, 0u) << got.out;
      EXPECT_NE(got.out.find("inet 10.30.0.5/24"), std::string::npos) << got.out;
      EXPECT_NE(got.out.find("default via 10.30.0.1 dev guest0"), std::string::npos) << got.out;
    } else {
      // ERROR's text, after its kind byte.
      EXPECT_NE(got.out.find("cannot set up the container's network: the guest has no network "
                             "interface for the container's network"),
                std::string::npos)
          << got.out;
    }
  }
}

// An agent on a real ext4 image of `src` (a loop device), in a mount
// namespace of its own with a /run of its own, so that nothing it mounts
// reaches the host; the agent and the loop device go with it. `device` is
// empty (and `why` says why) when there is no loop device here.
struct PrivateAgent {
  Process agent;
  std::string device, sock, why;
  PrivateAgent(const std::string& dir, const std::string& src) {
    std::string image = dir + "/root.ext4";
    Result made = Finish(Start({"/usr/sbin/mke2fs", "-q", "-F", "-t", "ext4", "-d", src, image,
                                "16M"}));
    Result attached = Finish(Start({"/usr/sbin/losetup", "-f", "--show", image}));
    if (made.status != 0 || attached.status != 0) {
      why = made.err + attached.err;
      return;
    }
    device = attached.out.substr(0, attached.out.find('\n'));
    sock = dir + "/private.sock";
    agent = Start({"/usr/bin/unshare", "-m", "--propagation", "private", "sh", "-c",
                   std::string("mount -t tmpfs tmpfs /run && exec ") + EMBER_AGENT_BIN +
                       " --listen unix:" + sock});
  }
  ~PrivateAgent() {
    if (agent.pid > 0) {
      kill(agent.pid, SIGTERM);
      Finish(agent);
    }
    if (!device.empty()) Finish(Start({"/usr/sbin/losetup", "-d", device}));
  }
  bool Listening() {
    return WaitFor([&] {
      int fd = ConnectUnix(sock);
      if (fd >= 0) close(fd);
      return fd >= 0;
    });
  }
};

// root_readonly on a real ext4 root: the root refuses writes, its bind
// mount and tmpfs take them.
TEST_F(AgentTest, AReadOnlyRootKeepsItsMountsWritable) {
  if (geteuid() != 0) GTEST_SKIP() << "mounts need root";
  std::string src = dir_ + "/src";
  ASSERT_EQ(system(("mkdir -p " + src + "/.ember-binds/0 && cp /bin/busybox " + src).c_str()), 0);
  PrivateAgent agent(dir_, src);
  if (agent.device.empty()) GTEST_SKIP() << "no loop device here: " << agent.why;
  ASSERT_TRUE(agent.Listening());
  std::string device = agent.device, sock = agent.sock;
  ExecRequest r;
  r.flags = ExecRequest::kFlagContainer;
  r.argv = {"/busybox", "sh", "-c",
            "/busybox touch /new 2>/dev/null || echo root-read-only; "
            "/busybox touch /data/new && echo data-writable; "
            "/busybox touch /scratch/new && echo scratch-writable"};
  r.container.root_device = device;
  r.container.root_dir = dir_ + "/mnt";
  r.container.mounts = {{"bind", "/.ember-binds/0", "/data", MS_BIND, ""},
                        {"tmpfs", "tmpfs", "/scratch", 0, "size=1m"}};
  r.container.root_readonly = true;
  // Twice: an exec before the init's request makes the root as the init's
  // will, and the init's then finds it made (the copies hidden by then).
  for (int request = 0; request < 2; ++request) {
    Outcome got = RunRequest(sock, r);
    EXPECT_FALSE(got.exit.signaled);
    EXPECT_EQ(got.exit.value, 0u);
    EXPECT_EQ(got.out, "root-read-only\ndata-writable\nscratch-writable\n") << request;
  }
}

// A SYNC through the agent binary, on a real ext4 image (the agent mounts
// the device again under its /run): the container's read-only bind of a
// volume laid out as Kubernetes' atomic writer lays it out sees the new
// version, and still cannot write it.
TEST_F(AgentTest, ASyncReachesAReadOnlyBindMount) {
  if (geteuid() != 0) GTEST_SKIP() << "mounts need root";
  std::string src = dir_ + "/src";
  ASSERT_EQ(system(("mkdir -p " + src + "/.ember-binds/0/..v1 && cp /bin/busybox " + src +
                    " && cd " + src + "/.ember-binds/0 && echo one > ..v1/key && "
                    "ln -s ..v1 ..data && ln -s ..data/key key")
                       .c_str()),
            0);
  PrivateAgent agent(dir_, src);
  if (agent.device.empty()) GTEST_SKIP() << "no loop device here: " << agent.why;
  ASSERT_TRUE(agent.Listening());
  std::string device = agent.device, sock = agent.sock;
  // A SYNC may come before the process's request has mounted anything: a
  // key added to the first version.
  SyncRequest sync;
  sync.device = device;
  sync.top = "/.ember-binds/0";
  sync.entries = testing::Volume("..v1", {{"key", "one\n"}, {"more", "1\n"}});
  std::string hello = Frames({{Type::kHello, EncodeU32(kVersion)}});
  std::string answer = RawExchange(sock, hello + Frames({{Type::kSync, EncodeSync(sync)}}));
  EXPECT_EQ(answer, hello + Frames({{Type::kSynced, ""}}));
  ExecRequest r;
  r.flags = ExecRequest::kFlagContainer;
  r.argv = {"/busybox", "sh", "-c",
            "/busybox cat /etc/config/key; /busybox ls -a /etc/config | /busybox tr '\\n' ' '; "
            "/busybox touch /etc/config/new 2>/dev/null || echo read-only"};
  r.container.root_device = device;
  r.container.root_dir = dir_ + "/mnt";
  r.container.mounts = {{"bind", "/.ember-binds/0", "/etc/config", MS_BIND | MS_RDONLY, ""}};
  EXPECT_EQ(RunRequest(sock, r).out, "one\n. .. ..data ..v1 key more read-only\n");

  sync.entries = testing::Volume("..v2", {{"key", "two\n"}, {"other", "three\n"}});
  answer = RawExchange(sock, hello + Frames({{Type::kSync, EncodeSync(sync)}}));
  EXPECT_EQ(answer, hello + Frames({{Type::kSynced, ""}}));
  EXPECT_EQ(RunRequest(sock, r).out, "two\n. .. ..data ..v2 key other read-only\n");

  sync.top = "/.ember-binds/1";
  answer = RawExchange(sock, hello + Frames({{Type::kSync, EncodeSync(sync)}}));
  EXPECT_NE(answer.find("no directory /.ember-binds/1 on " + device), std::string::npos) << answer;
}

// Stands in for the VMM's vsock Unix socket (Firecracker's host-initiated
// connections): answers one "CONNECT <port>" by closing (nobody listens)
// or by "OK <n>" and relaying bytes to the agent's socket.
class FakeVmm {
 public:
  FakeVmm(const std::string& path, const std::string& agent) : agent_(agent) {
    listener_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listener_.get(), 1) != 0) {
      ADD_FAILURE() << "fake VMM socket: " << strerror(errno);
    }
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeVmm() {
    shutdown(listener_.get(), SHUT_RDWR);  // wakes accept
    thread_.join();
  }
  std::string line() const { return line_; }

 private:
  void Serve() {
    Fd conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn.valid()) return;
    line_ = ReadUntil(conn.get(), "\n");
    if (line_ != "CONNECT 1024\n") return;  // closing: nobody listens there
    Fd guest(ConnectUnix(agent_));
    (void)!write(conn.get(), "OK 1073741824\n", 14);
    char buf[65536];
    while (true) {
      pollfd fds[2] = {{conn.get(), POLLIN, 0}, {guest.get(), POLLIN, 0}};
      poll(fds, 2, -1);
      for (int i = 0; i < 2; ++i) {
        if (!fds[i].revents) continue;
        ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) return;
        if (write(fds[1 - i].fd, buf, n) != n) return;
      }
    }
  }

  std::string agent_;
  Fd listener_;
  std::string line_;
  std::thread thread_;
};

// A hostile guest's agent: answers one connection with `bytes`, then
// reads until the client leaves; with `flood`, sends STDOUT frames
// meanwhile, as fast as the client takes them.
class FakeAgent {
 public:
  FakeAgent(const std::string& path, std::string bytes, bool flood = false)
      : bytes_(std::move(bytes)), flood_(flood) {
    listener_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    unlink(path.c_str());
    if (bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listener_.get(), 1) != 0) {
      ADD_FAILURE() << "cannot listen on " << path;
      return;
    }
    thread_ = std::thread([this] {
      Fd conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) return;
      (void)!send(conn.get(), bytes_.data(), bytes_.size(), MSG_NOSIGNAL);
      // A deep buffer (as root), so that the client's socket stays readable.
      int deep = 16 << 20;
      setsockopt(conn.get(), SOL_SOCKET, SO_SNDBUFFORCE, &deep, sizeof(deep));
      std::string output;
      AppendFrame(&output, Type::kStdout, std::string(kMaxPayload, 'y'));
      while (flood_ && send(conn.get(), output.data(), output.size(), MSG_NOSIGNAL) > 0) {
      }
      char buf[4096];
      while (read(conn.get(), buf, sizeof(buf)) > 0) {
      }
    });
  }
  ~FakeAgent() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::string bytes_;
  bool flood_;
  Fd listener_;
  std::thread thread_;
};

TEST_F(AgentTest, ABadAgentGetsAClearErrorNotAWrongStatus) {
  std::string hello = Frames({{Type::kHello, EncodeU32(kVersion)}});
  std::string fake = dir_ + "/fake.sock";
  std::string exit_signaled(1, '\1');
  struct Case {
    std::string bytes;
    std::string message;
  } cases[] = {
      // 128 + 0x7fffffff would overflow; 128 + 128 would exit 0.
      {hello + Frames({{Type::kExit, exit_signaled + EncodeU32(0x7fffffff)}}), "bad EXIT"},
      {hello + Frames({{Type::kExit, exit_signaled + EncodeU32(128)}}), "bad EXIT"},
      {hello + Frames({{Type::kExit, std::string(1, '\0') + EncodeU32(256)}}), "bad EXIT"},
      {hello + Frames({{Type::kError, ""}}), "(no message)"},
      // A client's type: refused from its header, before 4 MiB are buffered.
      {hello + std::string("\0\0\x40\0\x02", 5), "frame type 2 is not one the agent sends"},
  };
  for (const Case& c : cases) {
    FakeAgent agent(fake, c.bytes);
    Result r = Finish(Start({EMBER_EXEC_BIN, "--unix", fake, "--no-stdin", "--", "true"}));
    EXPECT_EQ(r.status, 125) << c.message;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

// The deadline holds while output keeps coming, when poll never waits.
TEST_F(AgentTest, TimeoutHoldsAgainstAnAgentThatNeverStopsWriting) {
  std::string fake = dir_ + "/fake.sock";
  FakeAgent agent(fake, Frames({{Type::kHello, EncodeU32(kVersion)}, {Type::kStarted, EncodeU32(7)}}),
                  /*flood=*/true);
  auto begin = std::chrono::steady_clock::now();
  std::string exec = EMBER_EXEC_BIN;
  Result r = Finish(Start(
      {"/bin/sh", "-c", exec + " --unix " + fake + " --timeout 0.5 -- yes > /dev/null"}));
  EXPECT_EQ(r.status, 124);
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
  // The old loop timed out only when poll found nothing ready: 3.3 s here.
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(2500));
}

TEST_F(AgentTest, ThroughTheVmmSocket) {
  std::string vmm = dir_ + "/vsock.sock";
  {
    FakeVmm fake(vmm, socket_);
    Result r = Finish(Start({EMBER_EXEC_BIN, "--uds", vmm, "--", "sh", "-c", "echo via vmm"}));
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "via vmm\n");
    EXPECT_EQ(fake.line(), "CONNECT 1024\n");
  }
  unlink(vmm.c_str());
  FakeVmm nobody(vmm, socket_);
  Result r = Finish(Start({EMBER_EXEC_BIN, "--uds", vmm, "--port", "5000", "--", "true"}));
  EXPECT_EQ(r.status, 125);
  EXPECT_NE(r.err.find("the guest agent is not listening on vsock port 5000"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace ember::agent
