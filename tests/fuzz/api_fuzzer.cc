// libFuzzer target: API requests (method, path, JSON body) through the
// router and every body parser. Any input must produce a response, never a
// crash (ASan and UBSan watch); the VMM side answers OK to every action.
#include <cstdint>
#include <string>

#include "api/router.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const kMethods[] = {"GET", "PUT", "PATCH", "DELETE", "POST"};
  if (size < 1) return 0;
  std::string input(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t newline = input.find('\n');
  ember::api::HttpRequest request;
  request.method = kMethods[data[0] % 5];
  request.path = input.substr(0, newline);
  request.body = newline == std::string::npos ? "" : input.substr(newline + 1);
  ember::api::ActionRunner runner = [](ember::VmmAction) -> absl::StatusOr<ember::VmmResult> {
    return std::monostate();
  };
  ember::api::HttpResponse r = ember::api::Route(request, runner);
  if (r.status != 200 && r.status != 204 && r.status != 400) __builtin_trap();
  return 0;
}
