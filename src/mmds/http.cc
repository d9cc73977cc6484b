#include "src/mmds/http.h"

#include "absl/strings/str_cat.h"
#include "src/common/utf8.h"

namespace ember::mmds {
namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kInvalidRequest = "Invalid request.";

HttpError Error(int status, std::string message) { return HttpError{status, std::move(message)}; }


bool IsSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

// The pieces of `s` between `sep`s, empty ones included.
std::vector<std::string_view> Split(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> out;
  while (true) {
    size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + sep.size());
  }
}

std::string InvalidValue(std::string_view name, std::string_view value) {
  return "Invalid header. Reason: Invalid value. Key:" + std::string(name) + "; Value:" +
         std::string(value);
}

// micro_http's Accept-Encoding check: refuses only an explicit "no identity".
std::optional<HttpError> CheckAcceptEncoding(std::string_view value) {
  if (value.empty()) return Error(400, std::string(kInvalidRequest));
  for (std::string_view part : Split(value, ",")) {
    std::string_view enc = Trim(part);
    bool no_identity = value.find("identity") == std::string_view::npos;
    if (enc == "identity;q=0" || (enc == "*;q=0" && no_identity)) {
      return Error(400, InvalidValue("Accept-Encoding", part));
    }
  }
  return std::nullopt;
}

// One header line; an error for what Firecracker refuses, nothing for what
// it ignores.
std::optional<HttpError> ParseHeader(std::string_view line, HttpRequest* req) {
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return Error(400, "Invalid header. Reason: Header is incorrectly formatted. Key: " +
                          std::string(line));
  }
  std::string_view raw_name = line.substr(0, colon), raw_value = line.substr(colon + 1);
  std::string name = Lower(Trim(raw_name));
  std::string_view value = Trim(raw_value);
  if (name == "content-length") {
    if (!ParseU32(value, &req->content_length)) {
      return Error(400, InvalidValue(raw_name, raw_value));
    }
  } else if (name == "accept") {
    if (value == "text/plain") req->accept = MediaType::kPlainText;
    if (value == "application/json") req->accept = MediaType::kJson;
  } else if (name == "accept-encoding") {
    return CheckAcceptEncoding(value);
  } else if (name == "content-type" || name == "transfer-encoding" || name == "expect" ||
             name == "server") {
    // Known to micro_http; their values do not matter to MMDS.
  } else {
    HttpHeader h{std::string(Trim(raw_name)), std::string(value)};
    if (name == "x-metadata-token") req->token = std::move(h);
    else if (name == "x-aws-ec2-metadata-token") req->aws_token = std::move(h);
    else if (name == "x-metadata-token-ttl-seconds") req->ttl = std::move(h);
    else if (name == "x-aws-ec2-metadata-token-ttl-seconds") req->aws_ttl = std::move(h);
    else if (name == "x-forwarded-for") req->forwarded_for = std::move(h);
  }
  return std::nullopt;
}

}  // namespace

// Rust's u32::from_str: an optional '+', then only digits, no overflow.
bool ParseU32(std::string_view s, uint32_t* out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > UINT32_MAX) return false;
  }
  *out = static_cast<uint32_t>(v);
  return true;
}

std::string_view HttpRequest::AbsPath() const {
  std::string_view s = uri;
  constexpr std::string_view kScheme = "http://";
  if (s.substr(0, kScheme.size()) == kScheme) {
    s.remove_prefix(kScheme.size());
    size_t slash = s.find('/');
    return slash == std::string_view::npos ? std::string_view() : s.substr(slash);
  }
  return !s.empty() && s[0] == '/' ? s : std::string_view();
}

size_t FindRequestEnd(std::span<const uint8_t> b) {
  for (size_t i = 0; i + 1 < b.size(); i++) {
    if (b[i] != '\n') continue;
    if (b[i + 1] == '\n') return i + 2;
    if (i + 2 < b.size() && b[i + 1] == '\r' && b[i + 2] == '\n') return i + 3;
  }
  return 0;
}

std::variant<HttpRequest, HttpError> ParseRequest(std::string_view head) {
  HttpRequest req;
  size_t line_end = head.find(kCrlf);
  // "GET" + SP + one character of URI + SP + "HTTP/1.x"
  constexpr size_t kMinLine = 3 + 1 + 8 + 2;
  if (line_end == std::string_view::npos || line_end < kMinLine) {
    return Error(400, std::string(kInvalidRequest));
  }
  std::string_view line = head.substr(0, line_end);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Error(400, std::string(kInvalidRequest));
  std::string_view method = line.substr(0, sp1), uri = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (method == "GET") req.method = Method::kGet;
  else if (method == "PUT") req.method = Method::kPut;
  else if (method == "PATCH") req.method = Method::kPatch;
  else if (method == "DELETE") req.method = Method::kDelete;
  else return Error(501, "Unsupported HTTP method.");
  if (uri.empty()) return Error(400, "Empty URI not allowed.");
  if (!IsUtf8(uri)) return Error(400, "Cannot parse URI as UTF-8.");
  req.uri = std::string(uri);
  if (version == "HTTP/1.0") req.version = HttpVersion::k10;
  else if (version == "HTTP/1.1") req.version = HttpVersion::k11;
  else return Error(501, "Unsupported HTTP version.");

  // The headers run from after the request line to the first blank line.
  size_t blank = head.find("\r\n\r\n", line_end);
  if (blank == std::string_view::npos) return Error(400, std::string(kInvalidRequest));
  if (blank > line_end) {
    std::string_view headers = head.substr(line_end + 2, blank - line_end - 2);
    if (!IsUtf8(headers)) return Error(400, std::string(kInvalidRequest));
    for (std::string_view h : Split(headers, kCrlf)) {
      if (h.empty()) break;
      if (std::optional<HttpError> err = ParseHeader(h, &req)) {
        err->content_length = req.content_length;
        return *std::move(err);
      }
    }
  }
  // The head is all Firecracker reads: a body it announces is never there.
  if (req.content_length > 0) {
    HttpError err = Error(400, std::string(kInvalidRequest));
    err.content_length = req.content_length;
    return err;
  }
  return req;
}

std::string HttpResponse::Serialize() const {
  // As micro_http: no reason phrase ("HTTP/1.1 200 \r\n"), always keep-alive.
  std::string out = absl::StrCat(version == HttpVersion::k10 ? "HTTP/1.0 " : "HTTP/1.1 ", status,
                                 " \r\nServer: Ember\r\nConnection: keep-alive\r\n");
  if (allow_get_put) out += "Allow: GET, PUT\r\n";
  for (const auto& [name, value] : headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  absl::StrAppend(&out, "Content-Type: ",
                  content_type == MediaType::kJson ? "application/json" : "text/plain",
                  "\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  return out;
}

HttpResponse ErrorResponse(const HttpError& error) {
  HttpResponse r;
  r.status = error.status;
  r.body = error.message;
  return r;
}

}  // namespace ember::mmds
