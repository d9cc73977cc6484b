#include "api/http_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/str_cat.h"
#include "src/common/log.h"
#include "src/common/thread_stack.h"
#include "src/seccomp/seccomp.h"
#include "src/common/exit_code.h"

namespace ember::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;
using Stream = beast::basic_stream<Local, asio::any_io_executor, beast::unlimited_rate_policy>;

// A client that sends nothing for this long is disconnected.
constexpr auto kIdleTimeout = std::chrono::seconds(30);
// After a failed accept (out of descriptors or memory), the next try.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

// One connection: read a request, answer it, repeat until either side
// closes. Beast's buffer keeps pipelined requests for the next read.
// `live` counts the sessions that exist; it must outlive them.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Local::socket socket, HttpServer* server, size_t* live)
      : stream_(std::move(socket)), server_(server), live_(live) {
    ++*live_;
  }
  ~Session() { --*live_; }

  void Read() {
    parser_.emplace();
    parser_->body_limit(server_->max_body());
    stream_.expires_after(kIdleTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnRead(ec);
                     });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return Reply(Fault(400, absl::StrCat("request body is larger than the limit of ",
                                           server_->max_body(), " bytes")),
                   /*keep_alive=*/false);
    }
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) return Close();
    if (ec) {
      if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
        return Reply(Fault(400, absl::StrCat("malformed HTTP request: ", ec.message())), false);
      }
      return Close();
    }
    http::request<http::string_body> req = parser_->release();
    HttpResponse r = server_->handler()(
        {std::string(req.method_string()), std::string(req.target()), std::move(req.body())});
    Reply(r, req.keep_alive());
  }

  void Reply(const HttpResponse& r, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(r.status), 11);
    res->set(http::field::server, "Ember");
    if (!r.body.empty()) res->set(http::field::content_type, "application/json");
    if (r.deprecated) res->set("Deprecation", "true");
    res->body() = r.body;
    res->keep_alive(keep_alive);
    res->prepare_payload();
    stream_.expires_after(kIdleTimeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
                        if (ec || !keep_alive) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(Local::socket::shutdown_both, ignored);
  }

  Stream stream_;
  HttpServer* server_;
  size_t* live_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

struct HttpServer::Impl {
  // Sessions open now. Declared before `io`, so that it outlives the
  // sessions that io's destructor frees. Touched on the API thread only.
  size_t connections = 0;
  std::string path;
  asio::io_context io{1};
  Local::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  std::thread thread;
  HttpServer* server = nullptr;
  size_t max_connections = kMaxConnections;
  uint64_t accept_failures = 0;  // for rate-limited log lines
  uint64_t refused = 0;

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, Local::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;  // closed
      if (ec) return RetryAccept(ec);
      if (connections >= max_connections) {
        Refuse(std::move(socket));
      } else {
        std::make_shared<Session>(std::move(socket), server, &connections)->Read();
      }
      Accept();
    });
  }

  // The connection stays in the listen backlog; accepting again at once
  // would fail the same way, so wait a little.
  void RetryAccept(beast::error_code ec) {
    if (LogRateLimited(++accept_failures)) {
      LOG_WARN("API server: accept failed (%s, %d times so far); retrying", ec.message(),
               accept_failures);
    }
    accept_retry.expires_after(kAcceptRetry);
    accept_retry.async_wait([this](beast::error_code wait_ec) {
      if (!wait_ec) Accept();
    });
  }

  // Answers 503 and closes. The reply is a few hundred bytes on a fresh
  // socket, so one non-blocking write sends it or the client is gone. With
  // sendmsg, as the sessions write: the API filter has no sendto, which
  // Asio's write_some of one buffer would use.
  void Refuse(Local::socket socket) {
    if (LogRateLimited(++refused)) {
      LOG_WARN("API server: %d connections are open; refusing another (%d refused so far)",
               connections, refused);
    }
    static const std::string reply = [] {
      HttpResponse r = Fault(503, "too many open connections");
      return absl::StrCat("HTTP/1.1 503 Service Unavailable\r\nServer: Ember\r\n",
                          "Content-Type: application/json\r\nConnection: close\r\n",
                          "Content-Length: ", r.body.size(), "\r\n\r\n", r.body);
    }();
    iovec iov{const_cast<char*>(reply.data()), reply.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    (void)sendmsg(socket.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    beast::error_code ignored;
    socket.shutdown(Local::socket::shutdown_both, ignored);
  }
};

HttpResponse Fault(int status, const std::string& message) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("fault_message");
  w.String(message.c_str(), static_cast<rapidjson::SizeType>(message.size()));
  w.EndObject();
  return {status, buf.GetString()};
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& socket_path,
                                                              size_t max_body,
                                                              HttpHandler handler,
                                                              size_t max_connections) {
  if (socket_path.empty() || socket_path.size() >= 108) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-sock '", socket_path, "' must be 1-107 characters"));
  }
  auto impl = std::make_unique<Impl>();
  impl->path = socket_path;
  impl->max_connections = max_connections;
  beast::error_code ec;
  impl->acceptor.open(Local(), ec);
  if (!ec) impl->acceptor.bind(Local::endpoint(socket_path), ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::string why = ec == asio::error::address_in_use ? "it already exists" : ec.message();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot serve the API on ", socket_path, ": ", why));
  }
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(impl)));
  server->max_body_ = max_body;
  server->handler_ = std::move(handler);
  server->impl_->server = server.get();
  server->impl_->Accept();
  server->impl_->thread = std::thread([impl = server->impl_.get()] {
    SetThreadName("api");
    KeepStackInSmallPages();
    // Before the first request is read.
    if (absl::Status st = seccomp::InstallThreadFilter("api"); !st.ok()) {
      LOG_ERROR("%s; the API thread cannot run unfiltered", st.message());
      std::_Exit(kExitGenericError);
    }
    impl->io.run();
  });
  return server;
}

HttpServer::~HttpServer() {
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->accept_retry.cancel();
    impl->io.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
  unlink(impl_->path.c_str());
}

}  // namespace ember::api
