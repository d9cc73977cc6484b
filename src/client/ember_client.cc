// ember-client: sends one request to Ember's API socket and prints the
// answer, so scripts can drive a microVM without curl.
//
//   ember-client --api-sock PATH METHOD URL-PATH [JSON-BODY]
//   ember-client --api-sock /tmp/ember.sock PUT /actions '{"action_type": "InstanceStart"}'
//
// Exit codes: 0 the request succeeded (2xx; a JSON answer is printed),
// 1 Ember refused it (its fault_message goes to stderr), 2 bad usage or no
// connection.
// Boost 1.74's asio uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <string>

#include <rapidjson/document.h>

#include "src/common/json_reader.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr char kUsage[] =
    "usage: ember-client --api-sock PATH METHOD URL-PATH [JSON-BODY]\n"
    "  e.g. ember-client --api-sock /tmp/ember.sock GET /\n";

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "ember-client: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || std::string(argv[1]) != "--api-sock" || argc > 6) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string sock = argv[2], method = argv[3], target = argv[4];
  const std::string body = argc == 6 ? argv[5] : "";
  http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) return Fail("unknown method " + method, 2);

  asio::io_context io;
  asio::local::stream_protocol::socket socket(io);
  beast::error_code ec;
  socket.connect(asio::local::stream_protocol::endpoint(sock), ec);
  if (ec) return Fail("cannot connect to " + sock + ": " + ec.message(), 2);

  http::request<http::string_body> req(verb, target, 11);
  req.set(http::field::host, "localhost");
  req.set(http::field::user_agent, "ember-client");
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  http::write(socket, req, ec);
  if (ec) return Fail("sending: " + ec.message(), 2);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res, ec);
  if (ec) return Fail("reading the answer: " + ec.message(), 2);

  if (res.result_int() >= 200 && res.result_int() < 300) {
    if (!res.body().empty()) std::printf("%s\n", res.body().c_str());
    return 0;
  }
  rapidjson::Document doc;
  if (ember::ParseJsonObject(res.body(), &doc).ok() && doc.HasMember("fault_message") &&
      doc["fault_message"].IsString()) {
    return Fail(doc["fault_message"].GetString(), 1);
  }
  return Fail("HTTP " + std::to_string(res.result_int()) + ": " + res.body(), 1);
}
