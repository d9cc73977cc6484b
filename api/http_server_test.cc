#include "api/http_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "src/common/log.h"
#include "src/seccomp/seccomp.h"

namespace ember::api {
namespace {

using std::chrono::steady_clock;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The API thread runs under its real filter, as in ember: a call the
    // filter lacks ends this process with 148.
    seccomp::InstallDenialHandler();
    auto filters = seccomp::ParseFilters(seccomp::DefaultFilters());
    ASSERT_TRUE(filters.ok()) << filters.status();
    ASSERT_TRUE(seccomp::UseFilters(std::move(*filters)).ok());
    char dir[] = "/tmp/ember-http-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    sock_ = dir_ + "/api.sock";
  }
  void TearDown() override {
    server_.reset();
    rmdir(dir_.c_str());
  }

  void StartServer(size_t max_connections) {
    auto server = HttpServer::Start(
        sock_, kDefaultMaxBody,
        [](const HttpRequest& r) { return HttpResponse{200, "{\"path\":\"" + r.path + "\"}"}; },
        max_connections);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // A client socket, not yet connected, whose reads give up after 10 s.
  static int Socket() {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
  }

  bool ConnectTo(int fd) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock_.c_str(), sizeof(addr.sun_path) - 1);
    return connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }

  int Connect() {
    int fd = Socket();
    EXPECT_TRUE(ConnectTo(fd)) << strerror(errno);
    return fd;
  }

  // Sends GET `path` and returns what comes back: one whole response, or
  // what arrived before the server closed or 10 s passed.
  static std::string Get(int fd, const std::string& path) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
      return "";
    }
    return ReadResponse(fd);
  }

  static std::string ReadResponse(int fd) {
    std::string got;
    char buf[4096];
    for (;;) {
      size_t end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t cl = got.find("Content-Length: ");
        size_t len = cl == std::string::npos ? 0 : std::strtoul(got.c_str() + cl + 16, nullptr, 10);
        if (got.size() >= end + 4 + len) return got;
      }
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return got;
      got.append(buf, n);
    }
  }

  std::string dir_, sock_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ConnectionsPastTheCapAreRefusedAndTheOthersServed) {
  StartServer(3);
  std::vector<int> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(Connect());
    EXPECT_NE(Get(open.back(), "/a").find("200 OK"), std::string::npos);
  }
  // The fourth is answered 503 and closed, again and again.
  for (int i = 0; i < 3; ++i) {
    int extra = Connect();
    std::string reply = ReadResponse(extra);
    EXPECT_NE(reply.find("HTTP/1.1 503"), std::string::npos) << reply;
    EXPECT_NE(reply.find("too many open connections"), std::string::npos) << reply;
    char c;
    EXPECT_EQ(recv(extra, &c, 1, 0), 0) << "closed after the answer";
    close(extra);
  }
  // The open ones are still served.
  for (int fd : open) EXPECT_NE(Get(fd, "/b").find("200 OK"), std::string::npos);
  // Once one closes, a new client gets its place.
  close(open.back());
  open.pop_back();
  std::string reply;
  for (auto deadline = steady_clock::now() + std::chrono::seconds(10);
       steady_clock::now() < deadline;) {
    int fd = Connect();
    reply = Get(fd, "/c");
    close(fd);
    if (reply.find("200 OK") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(reply.find("\"path\":\"/c\""), std::string::npos) << reply;
  for (int fd : open) close(fd);
}

// The API thread's accept failed with EMFILE once, and it never accepted
// again: the VMM ran on with no API.
TEST_F(HttpServerTest, KeepsAcceptingAfterRunningOutOfDescriptors) {
  int log_pipe[2];
  ASSERT_EQ(pipe2(log_pipe, O_CLOEXEC | O_NONBLOCK), 0);
  SetLogSink(log_pipe[1]);
  StartServer(kMaxConnections);
  int warm = Connect();
  ASSERT_EQ(Get(warm, "/warm").find("HTTP/1.1 200"), 0u);
  close(warm);
  int client = Socket();

  // Use up every descriptor, then connect: the server's accept fails.
  rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = std::min<rlim_t>(old.rlim_cur, 256);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> filler;
  for (int fd; (fd = dup(client)) >= 0;) filler.push_back(fd);
  ASSERT_EQ(errno, EMFILE);
  ASSERT_TRUE(ConnectTo(client)) << strerror(errno);
  std::string log;
  for (auto deadline = steady_clock::now() + std::chrono::seconds(5);
       steady_clock::now() < deadline && log.find("accept failed") == std::string::npos;) {
    char buf[512];
    ssize_t n = read(log_pipe[0], buf, sizeof(buf));
    if (n > 0) log.append(buf, n);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(log.find("Too many open files"), std::string::npos) << log;

  // Descriptors free again: the waiting client is served.
  for (int fd : filler) close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  std::string reply = Get(client, "/after");
  EXPECT_NE(reply.find("\"path\":\"/after\""), std::string::npos) << reply;
  close(client);

  server_.reset();
  SetLogSink(-1);
  close(log_pipe[0]);
  close(log_pipe[1]);
}

TEST_F(HttpServerTest, ABodyAtTheLimitIsHandledOneByteMoreIsRefused) {
  std::string seen;
  auto server = HttpServer::Start(sock_, 100, [&seen](const HttpRequest& r) {
    seen = r.body;
    return HttpResponse{204, ""};
  });
  ASSERT_TRUE(server.ok()) << server.status();
  for (size_t size : {100, 101}) {
    int fd = Connect();
    std::string req = "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(size) +
                      "\r\n\r\n" + std::string(size, 'b');
    ASSERT_EQ(send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    std::string reply = ReadResponse(fd);
    if (size == 100) {
      EXPECT_EQ(reply.find("HTTP/1.1 204"), 0u) << reply;
      EXPECT_EQ(seen, std::string(100, 'b'));
    } else {
      EXPECT_EQ(reply.find("HTTP/1.1 400"), 0u) << reply;
      EXPECT_NE(reply.find("larger than the limit of 100 bytes"), std::string::npos) << reply;
    }
    close(fd);
  }
}

TEST_F(HttpServerTest, ADeprecatedRequestIsAnsweredWithTheDeprecationHeader) {
  auto server = HttpServer::Start(sock_, kDefaultMaxBody, [](const HttpRequest& r) {
    HttpResponse res{204, ""};
    res.deprecated = r.path == "/old";
    return res;
  });
  ASSERT_TRUE(server.ok()) << server.status();
  int fd = Connect();
  EXPECT_NE(Get(fd, "/old").find("\r\nDeprecation: true\r\n"), std::string::npos);
  EXPECT_EQ(Get(fd, "/new").find("Deprecation"), std::string::npos);
  close(fd);
}

}  // namespace
}  // namespace ember::api
