// The guest's HTTP/1.x requests to MMDS, read as Firecracker's micro_http
// reads them, and the responses written as it writes them. The input is
// hostile: the parser works on one bounded request head (the TCP side
// holds at most kMaxRequestBytes of it) and keeps only the headers MMDS
// uses, so nothing it stores grows with the input.
//
// Firecracker's rules, kept: the head ends at the first "\n\n" or "\n\r\n"
// but lines must end in CRLF; methods GET, PUT, PATCH, DELETE (others are
// 501 "Unsupported HTTP method."); versions HTTP/1.0 and 1.1 (others 501);
// header names are case-insensitive; an Accept other than text/plain or
// application/json is ignored; a request announcing a body (Content-Length
// over 0) is refused with 400 "Invalid request." (Firecracker never reads
// MMDS bodies); the body's bytes are then skipped, not read as a request.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ember::mmds {

// Firecracker's receive buffer is 2500 bytes: a head must fit in it.
inline constexpr size_t kMaxRequestBytes = 2500;

enum class Method { kGet, kPut, kPatch, kDelete };
enum class HttpVersion { k10, k11 };
enum class MediaType { kPlainText, kJson };

struct HttpHeader {
  std::string name;  // as the client spelled it
  std::string value;
};

struct HttpRequest {
  Method method = Method::kGet;
  std::string uri;
  HttpVersion version = HttpVersion::k11;
  MediaType accept = MediaType::kPlainText;
  uint32_t content_length = 0;
  // The headers MMDS reads; the last of repeated ones wins.
  std::optional<HttpHeader> token;          // X-metadata-token
  std::optional<HttpHeader> aws_token;      // X-aws-ec2-metadata-token
  std::optional<HttpHeader> ttl;            // X-metadata-token-ttl-seconds
  std::optional<HttpHeader> aws_ttl;        // X-aws-ec2-metadata-token-ttl-seconds
  std::optional<HttpHeader> forwarded_for;  // X-Forwarded-For

  // The path of the URI ("/a/b" of "http://host/a/b"); empty when there is
  // none, as Firecracker's Uri::get_abs_path.
  std::string_view AbsPath() const;
};

// A request the parser refused: the status and the message Firecracker sends.
struct HttpError {
  int status;
  std::string message;
  // The body length announced before the error, to skip (0 if unknown).
  uint32_t content_length = 0;
};

// Rust's u32::from_str, which Firecracker parses numbers with: an
// optional '+', then digits only, no overflow.
bool ParseU32(std::string_view s, uint32_t* out);

// The length of the first request head in `bytes`, up to and including its
// blank line; 0 while none is complete.
size_t FindRequestEnd(std::span<const uint8_t> bytes);

// Parses one head as FindRequestEnd delimits it.
std::variant<HttpRequest, HttpError> ParseRequest(std::string_view head);

struct HttpResponse {
  HttpVersion version = HttpVersion::k11;
  int status = 200;
  // micro_http's default when nobody sets one.
  MediaType content_type = MediaType::kJson;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra ones
  bool allow_get_put = false;  // "Allow: GET, PUT" on a 405

  // The bytes on the wire: "HTTP/1.1 200 \r\n", Server, Connection:
  // keep-alive, Allow, extra headers, Content-Type, Content-Length, body.
  std::string Serialize() const;
};

// An error response as Firecracker's MMDS endpoint sends for a request it
// could not parse: HTTP/1.1, its default content type, the message.
HttpResponse ErrorResponse(const HttpError& error);

}  // namespace ember::mmds
