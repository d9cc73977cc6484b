#include "src/mmds/http.h"

#include <gtest/gtest.h>

#include <string>

namespace ember::mmds {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

HttpRequest Ok(std::string_view head) {
  auto r = ParseRequest(head);
  if (auto* e = std::get_if<HttpError>(&r)) {
    ADD_FAILURE() << head << " -> " << e->status << " " << e->message;
    return {};
  }
  return std::get<HttpRequest>(r);
}

HttpError Err(std::string_view head) {
  auto r = ParseRequest(head);
  if (!std::holds_alternative<HttpError>(r)) {
    ADD_FAILURE() << head << " parsed";
    return {};
  }
  return std::get<HttpError>(r);
}

TEST(FindRequestEndTest, FirecrackersBlankLines) {
  EXPECT_EQ(FindRequestEnd(Bytes("GET / HTTP/1.1\r\n\r\n")), 18u);
  EXPECT_EQ(FindRequestEnd(Bytes("GET / HTTP/1.1\n\n")), 16u);
  EXPECT_EQ(FindRequestEnd(Bytes("GET / HTTP/1.1\n\r\n")), 17u);
  EXPECT_EQ(FindRequestEnd(Bytes("GET / HTTP/1.1\r\nA: b\r\n")), 0u);
  EXPECT_EQ(FindRequestEnd(Bytes("GET / HTTP/1.1\r\n\r")), 0u);
  EXPECT_EQ(FindRequestEnd(Bytes("")), 0u);
  EXPECT_EQ(FindRequestEnd(Bytes("\n")), 0u);
  // Pipelined: the first one only.
  EXPECT_EQ(FindRequestEnd(Bytes("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")), 19u);
}

TEST(ParseRequestTest, RequestLine) {
  HttpRequest r = Ok("GET http://169.254.169.254/latest HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.method, Method::kGet);
  EXPECT_EQ(r.version, HttpVersion::k10);
  EXPECT_EQ(r.AbsPath(), "/latest");
  EXPECT_EQ(r.accept, MediaType::kPlainText);
  EXPECT_EQ(Ok("PUT /latest/api/token HTTP/1.1\r\n\r\n").method, Method::kPut);
  EXPECT_EQ(Ok("PATCH / HTTP/1.1\r\n\r\n").method, Method::kPatch);
  EXPECT_EQ(Ok("DELETE / HTTP/1.1\r\n\r\n").method, Method::kDelete);

  for (const char* m : {"POST", "HEAD", "OPTIONS", "get", "CONNECT"}) {
    HttpError e = Err(std::string(m) + " / HTTP/1.1\r\n\r\n");
    EXPECT_EQ(e.status, 501) << m;
    EXPECT_EQ(e.message, "Unsupported HTTP method.");
  }
  for (const char* v : {"HTTP/2.0", "HTTP/1.1 ", "http/1.1", "HTTP/1.10"}) {
    HttpError e = Err(std::string("GET / ") + v + "\r\n\r\n");
    EXPECT_EQ(e.status, 501) << v;
    EXPECT_EQ(e.message, "Unsupported HTTP version.");
  }
  EXPECT_EQ(Err("GET  / HTTP/1.1\r\n\r\n").message, "Empty URI not allowed.");
  EXPECT_EQ(Err("GET /\xff HTTP/1.1\r\n\r\n").message, "Cannot parse URI as UTF-8.");
  // Too short, no spaces, LF only: not a request.
  for (const char* bad : {"GET / HTTP/1\r\n\r\n", "GET/HTTP/1.1xx\r\n\r\n",
                          "GET / HTTP/1.1\n\n", "\r\n\r\n",
                          "GET / HTTP/1.1\r\nA: b\n\r\n"}) {
    HttpError e = Err(bad);
    EXPECT_EQ(e.status, 400) << bad;
    EXPECT_EQ(e.message, "Invalid request.") << bad;
  }
}

TEST(ParseRequestTest, AbsPathAsMicroHttp) {
  const std::pair<const char*, const char*> cases[] = {
      {"http://localhost/home", "/home"}, {"http://localhost:8080/home", "/home"},
      {"http://localhost/home/sub", "/home/sub"}, {"/home", "/home"}, {"home", ""},
      {"http://", ""}, {"http://192.168.0.0", ""}};
  for (auto [uri, path] : cases) {
    HttpRequest r;
    r.uri = uri;
    EXPECT_EQ(r.AbsPath(), path) << uri;
  }
}

TEST(ParseRequestTest, HeadersAreCaseInsensitive) {
  HttpRequest r = Ok(
      "GET / HTTP/1.1\r\naCcEpT: application/json\r\nX-METADATA-TOKEN:  abc \r\n"
      "x-aws-ec2-metadata-token: def\r\nX-metadata-token-ttl-seconds: 60\r\n"
      "x-Aws-Ec2-Metadata-Token-Ttl-Seconds: 61\r\nX-fOrWaRdEd-FoR: 1.2.3.4\r\n"
      "Host: 169.254.169.254\r\nUser-Agent: Wget\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(r.accept, MediaType::kJson);
  ASSERT_TRUE(r.token && r.aws_token && r.ttl && r.aws_ttl && r.forwarded_for);
  EXPECT_EQ(r.token->name, "X-METADATA-TOKEN");
  EXPECT_EQ(r.token->value, "abc");
  EXPECT_EQ(r.aws_token->value, "def");
  EXPECT_EQ(r.ttl->value, "60");
  EXPECT_EQ(r.aws_ttl->value, "61");
  EXPECT_EQ(r.forwarded_for->name, "X-fOrWaRdEd-FoR");
  // The last of repeated headers wins.
  EXPECT_EQ(Ok("GET / HTTP/1.1\r\nX-metadata-token: a\r\nx-metadata-token: b\r\n\r\n").token->value,
            "b");
}

TEST(ParseRequestTest, AcceptValues) {
  auto accept = [](const char* v) {
    return Ok(std::string("GET / HTTP/1.1\r\nAccept: ") + v + "\r\n\r\n").accept;
  };
  EXPECT_EQ(accept("application/json"), MediaType::kJson);
  EXPECT_EQ(accept("  application/json  "), MediaType::kJson);
  EXPECT_EQ(accept("text/plain"), MediaType::kPlainText);
  // Anything else (curl's and wget's */*) is ignored: plain text.
  EXPECT_EQ(accept("*/*"), MediaType::kPlainText);
  EXPECT_EQ(accept("application/json, text/plain"), MediaType::kPlainText);
  EXPECT_EQ(accept(""), MediaType::kPlainText);
  EXPECT_EQ(Ok("GET / HTTP/1.1\r\nAccept: application/json\r\nAccept: */*\r\n\r\n").accept,
            MediaType::kJson);
}

TEST(ParseRequestTest, BadHeaders) {
  HttpError e = Err("GET / HTTP/1.1\r\nFoo\r\n\r\n");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.message, "Invalid header. Reason: Header is incorrectly formatted. Key: Foo");
  e = Err("GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n");
  EXPECT_EQ(e.message, "Invalid header. Reason: Invalid value. Key:Content-Length; Value: abc");
  for (const char* len : {"-1", "4294967296", "1 2", ""}) {
    EXPECT_EQ(Err(std::string("GET / HTTP/1.1\r\nContent-Length: ") + len + "\r\n\r\n").status,
              400)
        << len;
  }
  e = Err("GET / HTTP/1.1\r\nAccept-Encoding: identity;q=0\r\n\r\n");
  EXPECT_EQ(e.message,
            "Invalid header. Reason: Invalid value. Key:Accept-Encoding; Value:identity;q=0");
  EXPECT_EQ(Err("GET / HTTP/1.1\r\nAccept-Encoding: gzip, *;q=0\r\n\r\n").status, 400);
  EXPECT_EQ(Err("GET / HTTP/1.1\r\nAccept-Encoding: \r\n\r\n").message, "Invalid request.");
  Ok("GET / HTTP/1.1\r\nAccept-Encoding: identity, *;q=0\r\n\r\n");
  Ok("GET / HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n");
  // Known headers with values micro_http does not take are ignored.
  Ok("GET / HTTP/1.1\r\nContent-Type: image/png\r\nExpect: x\r\nTransfer-Encoding: gzip\r\n\r\n");
  EXPECT_EQ(Err("GET / HTTP/1.1\r\nX-A: \xff\r\n\r\n").message, "Invalid request.");
  // Stops at the first empty line.
  Ok("GET / HTTP/1.1\r\nA: b\r\n\r\nnot a header\r\n\r\n");
}

TEST(ParseRequestTest, AnnouncedBodiesAreRefusedAndSkipped) {
  for (const char* m : {"GET", "PUT", "PATCH"}) {
    HttpError e = Err(std::string(m) + " / HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.message, "Invalid request.");
    EXPECT_EQ(e.content_length, 100u);
  }
  // A header error after the length still skips the body.
  EXPECT_EQ(Err("PUT / HTTP/1.1\r\nContent-Length: 7\r\nBad\r\n\r\n").content_length, 7u);
  EXPECT_EQ(Ok("PUT / HTTP/1.1\r\nContent-Length: +0\r\n\r\n").content_length, 0u);
}

TEST(ParseU32Test, RustRules) {
  uint32_t v;
  EXPECT_TRUE(ParseU32("0", &v) && v == 0);
  EXPECT_TRUE(ParseU32("+21600", &v) && v == 21600);
  EXPECT_TRUE(ParseU32("4294967295", &v) && v == 4294967295u);
  for (const char* bad : {"", "+", "-1", "4294967296", " 1", "1a", "0x1"}) {
    EXPECT_FALSE(ParseU32(bad, &v)) << bad;
  }
}

TEST(HttpResponseTest, WireFormatAsMicroHttp) {
  HttpResponse r;
  r.content_type = MediaType::kPlainText;
  r.body = "abc";
  EXPECT_EQ(r.Serialize(),
            "HTTP/1.1 200 \r\nServer: Ember\r\nConnection: keep-alive\r\n"
            "Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc");
  r.version = HttpVersion::k10;
  r.status = 405;
  r.allow_get_put = true;
  r.headers.emplace_back("X-metadata-token-ttl-seconds", "60");
  r.body.clear();
  EXPECT_EQ(r.Serialize(),
            "HTTP/1.0 405 \r\nServer: Ember\r\nConnection: keep-alive\r\nAllow: GET, PUT\r\n"
            "X-metadata-token-ttl-seconds: 60\r\nContent-Type: text/plain\r\n"
            "Content-Length: 0\r\n\r\n");
  HttpResponse e = ErrorResponse({501, "Unsupported HTTP method."});
  EXPECT_EQ(e.Serialize(),
            "HTTP/1.1 501 \r\nServer: Ember\r\nConnection: keep-alive\r\n"
            "Content-Type: application/json\r\nContent-Length: 24\r\n\r\n"
            "Unsupported HTTP method.");
}

}  // namespace
}  // namespace ember::mmds
