#include "api/router.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>

namespace ember::api {
namespace {

// Reads api/ember-api.yaml's paths and their methods.
std::map<std::string, std::set<std::string>> DescribedRoutes() {
  std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/api/ember-api.yaml");
  std::map<std::string, std::set<std::string>> routes;
  std::string line, path;
  bool in_paths = false;
  const std::regex path_re("^  (/[^:]*):\\s*$"), method_re("^    (get|put|patch|delete|post):");
  std::smatch m;
  while (std::getline(in, line)) {
    if (line.rfind("paths:", 0) == 0) in_paths = true;
    else if (!line.empty() && line[0] != ' ') in_paths = false;
    if (!in_paths) continue;
    if (std::regex_match(line, m, path_re)) {
      path = m[1];
      routes[path];
    } else if (std::regex_search(line, m, method_re) && !path.empty()) {
      std::string method = m[1];
      for (char& c : method) c = static_cast<char>(toupper(c));
      routes[path].insert(method);
    }
  }
  return routes;
}

std::string Concrete(std::string path) {
  return std::regex_replace(path, std::regex("\\{[a-z_]+\\}"), "x");
}

TEST(RouterTest, TheApiDescriptionListsExactlyWhatIsServed) {
  auto described = DescribedRoutes();
  ASSERT_FALSE(described.empty()) << "could not read api/ember-api.yaml";
  EXPECT_EQ(described, ServedRoutes());
}

TEST(RouterTest, EveryServedRouteIsAnsweredAndOtherMethodsAreRefused) {
  int calls = 0;
  ActionRunner runner = [&](VmmAction) -> absl::StatusOr<VmmResult> {
    calls++;
    return std::monostate();
  };
  for (const auto& [path, methods] : ServedRoutes()) {
    for (const char* method : {"GET", "PUT", "PATCH", "DELETE", "POST"}) {
      HttpResponse r = Route({method, Concrete(path), "{}"}, runner);
      bool served = methods.count(method) > 0;
      if (served) {
        EXPECT_EQ(r.body.find("not allowed"), std::string::npos) << method << " " << path;
        EXPECT_EQ(r.body.find("unknown path"), std::string::npos) << method << " " << path;
      } else {
        EXPECT_EQ(r.status, 400) << method << " " << path;
        EXPECT_NE(r.body.find("is not allowed on"), std::string::npos) << method << " " << path;
      }
    }
  }
  EXPECT_GT(calls, 5);
}

TEST(RouterTest, ErrorsAreFirecrackerFaults) {
  ActionRunner fail = [](VmmAction) -> absl::StatusOr<VmmResult> {
    return absl::FailedPreconditionError("no \"quotes\" lost");
  };
  HttpResponse r = Route({"GET", "/", ""}, fail);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, R"({"fault_message":"no \"quotes\" lost"})");
  EXPECT_EQ(Route({"PUT", "/mmds", "{}"}, fail).body,
            R"({"fault_message":"/mmds is not supported by Ember yet"})");
  EXPECT_EQ(Route({"GET", "/version?x=1", ""}, fail).status, 200) << "query strings ignored";
}

}  // namespace
}  // namespace ember::api
