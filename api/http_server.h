// HTTP/1.1 on a Unix socket, served with Boost.Beast on its own thread (the
// API thread): many connections at once (up to a cap), keep-alive and
// pipelining, a timeout for clients that stall. Each complete request goes
// to one handler, which returns the response; bodies over the limit are
// refused before the handler sees them. A failed accept (EMFILE: the
// process is out of file descriptors) is retried after a pause, so the API
// comes back once descriptors are free. (Beast is header-only, so Ember
// stays one static binary; Debian's libmicrohttpd would drag in GnuTLS.)
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ember::api {

// Firecracker's default request body limit.
inline constexpr size_t kDefaultMaxBody = 51200;
// Connections open at once; one more is answered 503 and closed (as
// Firecracker does past its 10), with a rate-limited log line. Bounds the
// API's memory (each connection buffers up to a body) and descriptors.
inline constexpr size_t kMaxConnections = 64;

struct HttpRequest {
  std::string method;
  std::string path;
  std::string body;
};

struct HttpResponse {
  int status = 204;
  std::string body;  // JSON, or empty
  // The request used a field Firecracker marks deprecated: the answer
  // carries "Deprecation: true", as Firecracker's does.
  bool deprecated = false;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// {"fault_message": "..."} as Firecracker writes it.
HttpResponse Fault(int status, const std::string& message);

class HttpServer {
 public:
  // Binds `socket_path` (which must not exist) and starts serving.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& socket_path, size_t max_body, HttpHandler handler,
      size_t max_connections = kMaxConnections);
  // Stops the API thread and removes the socket.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  size_t max_body() const { return max_body_; }
  const HttpHandler& handler() const { return handler_; }

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  size_t max_body_;
  HttpHandler handler_;
};

}  // namespace ember::api
