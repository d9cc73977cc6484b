#include "src/mmds/service.h"

#include "absl/strings/str_cat.h"

namespace ember::mmds {
namespace {

HttpResponse Text(const HttpRequest& req, int status, std::string body) {
  HttpResponse r;
  r.version = req.version;
  r.status = status;
  r.content_type = MediaType::kPlainText;
  r.body = std::move(body);
  return r;
}

std::string NotFound(std::string_view path) {
  return "Resource not found: " + std::string(path) + ".";
}

const std::optional<HttpHeader>& TokenHeader(const HttpRequest& req) {
  return req.token ? req.token : req.aws_token;
}

HttpResponse RespondGet(const DataStore& store, const HttpRequest& req) {
  std::string_view path = req.AbsPath();
  absl::StatusOr<std::string> value = store.GetValue(
      CollapseSlashes(path),
      req.accept == MediaType::kJson ? OutputFormat::kJson : OutputFormat::kImds);
  if (value.ok()) {
    HttpResponse r = Text(req, 200, *std::move(value));
    r.content_type = req.accept;
    return r;
  }
  if (value.status().code() == absl::StatusCode::kNotFound) return Text(req, 404, NotFound(path));
  return Text(req, 501, std::string(value.status().message()));
}

HttpResponse RespondPut(DataStore& store, const HttpRequest& req) {
  if (req.forwarded_for) {
    return Text(req, 400,
                absl::StrCat("Invalid header. Reason: Unsupported header name. Key: ",
                             req.forwarded_for->name));
  }
  if (CollapseSlashes(req.AbsPath()) != kTokenPath) return Text(req, 404, NotFound(req.AbsPath()));
  const std::optional<HttpHeader>& ttl = req.ttl ? req.ttl : req.aws_ttl;
  if (!ttl) {
    return Text(req, 400,
                "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or "
                "`X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.");
  }
  uint32_t seconds = 0;
  if (!ParseU32(ttl->value, &seconds)) {
    return Text(req, 400,
                absl::StrCat("Invalid header. Reason: Invalid value. Key:", ttl->name,
                             "; Value:", ttl->value));
  }
  absl::StatusOr<std::string> token = store.tokens().Generate(seconds);
  if (!token.ok()) return Text(req, 400, std::string(token.status().message()));
  HttpResponse r = Text(req, 200, *std::move(token));
  // The header as the guest spelled it, with the TTL granted.
  r.headers.emplace_back(ttl->name, absl::StrCat(seconds));
  return r;
}

}  // namespace

std::string CollapseSlashes(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  return out;
}

HttpResponse Respond(DataStore& store, const HttpRequest& req, MmdsMetrics& metrics) {
  if (req.AbsPath().empty()) return Text(req, 400, "Invalid URI.");
  switch (req.method) {
    case Method::kGet: {
      const std::optional<HttpHeader>& token = TokenHeader(req);
      bool valid = token && store.tokens().IsValid(token->value);
      if (!token) metrics.rx_no_token++;
      else if (!valid) metrics.rx_invalid_token++;
      if (store.version() == Version::kV2 && !valid) {
        return Text(req, 401,
                    token ? "MMDS token not valid."
                          : "No MMDS token provided. Use `X-metadata-token` or "
                            "`X-aws-ec2-metadata-token` header to specify the session token.");
      }
      return RespondGet(store, req);
    }
    case Method::kPut:
      return RespondPut(store, req);
    default: {
      HttpResponse r = Text(req, 405, "Not allowed HTTP method.");
      r.allow_get_put = true;
      return r;
    }
  }
}

std::string HandleRequest(DataStore& store, std::string_view head, MmdsMetrics& metrics,
                          uint32_t* skip) {
  std::variant<HttpRequest, HttpError> parsed = ParseRequest(head);
  if (HttpError* err = std::get_if<HttpError>(&parsed)) {
    *skip = err->content_length;
    return ErrorResponse(*err).Serialize();
  }
  *skip = 0;
  return Respond(store, std::get<HttpRequest>(parsed), metrics).Serialize();
}

}  // namespace ember::mmds
