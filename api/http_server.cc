#include "api/http_server.h"

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

// One connection: read a request, answer it, repeat until either side
// closes. Beast's buffer keeps pipelined requests for the next read.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Local::socket socket, HttpServer* server)
      : stream_(std::move(socket)), server_(server) {}

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
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

struct HttpServer::Impl {
  std::string path;
  asio::io_context io{1};
  Local::acceptor acceptor{io};
  std::thread thread;
  HttpServer* server = nullptr;

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, Local::socket socket) {
      if (ec) return;  // the acceptor was closed
      std::make_shared<Session>(std::move(socket), server)->Read();
      Accept();
    });
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
                                                              HttpHandler handler) {
  if (socket_path.empty() || socket_path.size() >= 108) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-sock '", socket_path, "' must be 1-107 characters"));
  }
  auto impl = std::make_unique<Impl>();
  impl->path = socket_path;
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
    impl->io.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
  unlink(impl_->path.c_str());
}

}  // namespace ember::api
