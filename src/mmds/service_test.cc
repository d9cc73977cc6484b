#include "src/mmds/service.h"

#include <gtest/gtest.h>

#include <string>

namespace ember::mmds {
namespace {

// Firecracker's mmds/mod.rs tests, through the parser as the guest's bytes.
class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() : store_(kDefaultSizeLimit, TokenAuthority({1, 2, 3, 4, 5, 6, 7}, [this] {
                            return now_;
                          })) {
    EXPECT_TRUE(store_
                    .Put(R"({"name":{"first":"John","second":"Doe"},"age":43,)"
                         R"("phones":{"home":{"RO":"+401234567","UK":"+441234567"},)"
                         R"("mobile":"+442345678"}})")
                    .ok());
  }

  HttpResponse Send(const std::string& head) {
    auto parsed = ParseRequest(head);
    if (auto* e = std::get_if<HttpError>(&parsed)) {
      ADD_FAILURE() << head << ": " << e->message;
      return {};
    }
    return Respond(store_, std::get<HttpRequest>(parsed), metrics_);
  }

  std::string Token(uint32_t ttl = 60) {
    HttpResponse r = Send("PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\n"
                          "X-metadata-token-ttl-seconds: " + std::to_string(ttl) + "\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    return r.body;
  }

  uint64_t now_ = 1000;
  DataStore store_;
  MmdsMetrics metrics_;
};

constexpr char kJson[] =
    R"({"age":43,"name":{"first":"John","second":"Doe"},)"
    R"("phones":{"home":{"RO":"+401234567","UK":"+441234567"},"mobile":"+442345678"}})";
constexpr char kNoToken[] =
    "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to "
    "specify the session token.";

TEST_F(ServiceTest, V1AnswersWithOrWithoutToken) {
  HttpResponse r = Send("GET http://169.254.169.254/ HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.version, HttpVersion::k10);
  EXPECT_EQ(r.content_type, MediaType::kPlainText);
  EXPECT_EQ(r.body, "age\nname/\nphones/");
  EXPECT_EQ(metrics_.rx_no_token, 1u);
  r = Send("GET http://169.254.169.254/ HTTP/1.1\r\nAccept: application/json\r\n"
           "X-metadata-token: nonsense\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.version, HttpVersion::k11);
  EXPECT_EQ(r.content_type, MediaType::kJson);
  EXPECT_EQ(r.body, kJson);
  EXPECT_EQ(metrics_.rx_invalid_token, 1u);
  std::string token = Token();
  Send("GET / HTTP/1.1\r\nX-metadata-token: " + token + "\r\n\r\n");
  EXPECT_EQ(metrics_.rx_invalid_token, 1u);
  EXPECT_EQ(metrics_.rx_no_token, 1u);
}

TEST_F(ServiceTest, V2NeedsAValidToken) {
  store_.set_version(Version::kV2);
  HttpResponse r = Send("GET http://169.254.169.254/ HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.content_type, MediaType::kPlainText);
  EXPECT_EQ(r.body, kNoToken);
  EXPECT_EQ(metrics_.rx_no_token, 1u);

  std::string token = Token(1);
  r = Send("GET http://169.254.169.254/ HTTP/1.0\r\nAccept: application/json\r\n"
           "X-metadata-token: " + token + "\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, kJson);
  r = Send("GET /name/first HTTP/1.1\r\nX-aws-ec2-metadata-token: " + token + "\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "John");

  now_ += 1000;  // expired
  for (std::string bad : {std::string("INVALID_TOKEN"), token}) {
    r = Send("GET / HTTP/1.0\r\nX-metadata-token: " + bad + "\r\n\r\n");
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.body, "MMDS token not valid.");
  }
  EXPECT_EQ(metrics_.rx_invalid_token, 2u);
}

TEST_F(ServiceTest, GetErrors) {
  for (Version v : {Version::kV1, Version::kV2}) {
    store_.set_version(v);
    std::string t = "X-metadata-token: " + Token() + "\r\n";
    HttpResponse r = Send("GET http://169.254.169.254/invalid HTTP/1.0\r\n" + t + "\r\n");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.body, "Resource not found: /invalid.");
    r = Send("GET /age HTTP/1.1\r\n" + t + "\r\n");
    EXPECT_EQ(r.status, 501);
    EXPECT_EQ(r.body, "Cannot retrieve value. The value has an unsupported type.");
    // A TTL header on a GET is ignored.
    r = Send("GET http://169.254.169.254/ HTTP/1.0\r\n" + t +
             "X-metadata-token-ttl-seconds: application/json\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "age\nname/\nphones/");
    // Runs of slashes collapse; the message names the path as sent.
    EXPECT_EQ(Send("GET //phones///home/UK HTTP/1.1\r\n" + t + "\r\n").body, "+441234567");
    EXPECT_EQ(Send("GET //x//y HTTP/1.1\r\n" + t + "\r\n").body, "Resource not found: //x//y.");
    for (const char* uri : {"http://169.254.169.254", "abc"}) {
      r = Send(std::string("GET ") + uri + " HTTP/1.1\r\n" + t + "\r\n");
      EXPECT_EQ(r.status, 400);
      EXPECT_EQ(r.body, "Invalid URI.");
    }
  }
}

TEST_F(ServiceTest, ImdsCompatIgnoresAccept) {
  store_.set_imds_compat(true);
  HttpResponse r = Send("GET /name HTTP/1.1\r\nAccept: application/json\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "first\nsecond");
  EXPECT_EQ(r.content_type, MediaType::kJson);  // as Firecracker: the Accept type
}

TEST_F(ServiceTest, PutToken) {
  for (Version v : {Version::kV1, Version::kV2}) {
    store_.set_version(v);
    HttpResponse r = Send("PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\n"
                          "X-metadata-token-ttl-seconds: 60\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, MediaType::kPlainText);
    ASSERT_EQ(r.headers.size(), 1u);
    EXPECT_EQ(r.headers[0], std::make_pair(std::string("X-metadata-token-ttl-seconds"),
                                           std::string("60")));
    EXPECT_TRUE(store_.tokens().IsValid(r.body));
    r = Send("PUT //latest//api/token HTTP/1.1\r\n"
             "x-aws-ec2-metadata-token-ttl-seconds: +5\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers[0].first, "x-aws-ec2-metadata-token-ttl-seconds");
    EXPECT_EQ(r.headers[0].second, "5");

    for (const char* h : {"X-Forwarded-For", "x-forwarded-for", "X-fOrWaRdEd-FoR"}) {
      r = Send(std::string("PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\n") + h +
               ": 203.0.113.195\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n");
      EXPECT_EQ(r.status, 400);
      EXPECT_EQ(r.body, std::string("Invalid header. Reason: Unsupported header name. Key: ") + h);
    }
    r = Send("PUT http://169.254.169.254/token HTTP/1.0\r\n"
             "X-metadata-token-ttl-seconds: 60\r\n\r\n");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.body, "Resource not found: /token.");
    r = Send("PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\n"
             "X-metadata-token-ttl-seconds: application/json\r\n\r\n");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body,
              "Invalid header. Reason: Invalid value. Key:X-metadata-token-ttl-seconds; "
              "Value:application/json");
    for (const char* ttl : {"0", "21601"}) {
      r = Send(std::string("PUT /latest/api/token HTTP/1.0\r\nX-metadata-token-ttl-seconds: ") +
               ttl + "\r\n\r\n");
      EXPECT_EQ(r.status, 400);
      EXPECT_EQ(r.body, std::string("Invalid time to live value provided for token: ") + ttl +
                            ". Please provide a value between 1 and 21600.");
    }
    r = Send("PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\n\r\n");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body,
              "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or "
              "`X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.");
  }
}

TEST_F(ServiceTest, OtherMethodsAreNotAllowed) {
  for (const char* m : {"PATCH", "DELETE"}) {
    HttpResponse r = Send(std::string(m) + " http://169.254.169.254/ HTTP/1.0\r\n\r\n");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.body, "Not allowed HTTP method.");
    EXPECT_TRUE(r.allow_get_put);
  }
}

TEST_F(ServiceTest, EmptyStore) {
  DataStore empty(kDefaultSizeLimit, TokenAuthority({1, 2, 3, 4, 5, 6, 7}, [] { return 0; }));
  auto get = [&](const char* head) {
    return Respond(empty, std::get<HttpRequest>(ParseRequest(head)), metrics_);
  };
  // Firecracker after a restore: "null" as JSON, unsupported as text.
  EXPECT_EQ(get("GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n").body, "null");
  EXPECT_EQ(get("GET / HTTP/1.1\r\n\r\n").status, 501);
  EXPECT_EQ(get("GET /a HTTP/1.1\r\n\r\n").status, 404);
}

TEST_F(ServiceTest, HandleRequestAnswersParseErrors) {
  uint32_t skip = 1;
  EXPECT_EQ(HandleRequest(store_, "POST / HTTP/1.0\r\n\r\n", metrics_, &skip),
            "HTTP/1.1 501 \r\nServer: Ember\r\nConnection: keep-alive\r\n"
            "Content-Type: application/json\r\nContent-Length: 24\r\n\r\nUnsupported HTTP method.");
  EXPECT_EQ(skip, 0u);
  std::string r = HandleRequest(store_, "PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\n", metrics_,
                                &skip);
  EXPECT_EQ(skip, 9u);
  EXPECT_NE(r.find("400 \r\n"), std::string::npos);
  EXPECT_NE(r.find("\r\n\r\nInvalid request."), std::string::npos);
  r = HandleRequest(store_, "GET /name/second HTTP/1.1\r\n\r\n", metrics_, &skip);
  EXPECT_EQ(r, "HTTP/1.1 200 \r\nServer: Ember\r\nConnection: keep-alive\r\n"
               "Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nDoe");
}

}  // namespace
}  // namespace ember::mmds
