#include "api/router.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "api/routes.h"
#include "api/vm_config_json.h"

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

// An ActionRunner that counts the actions it is asked to run.
ActionRunner Counting(int* calls) {
  return [calls](VmmAction) -> absl::StatusOr<VmmResult> {
    (*calls)++;
    return std::monostate();
  };
}

TEST(RouterTest, AnIdInTheBodyThatIsNotThePathsIsRefused) {
  struct Case {
    const char* method;
    const char* path;
    const char* body;
    const char* message;
  } cases[] = {
      {"PUT", "/drives/rootfs",
       R"({"drive_id": "data", "path_on_host": "/x", "is_root_device": false})",
       "drive_id 'data' in the body does not match 'rootfs' in the path"},
      {"PATCH", "/drives/rootfs", R"({"drive_id": "data", "path_on_host": "/x"})",
       "drive_id 'data' in the body does not match 'rootfs' in the path"},
      {"PUT", "/network-interfaces/eth0", R"({"iface_id": "eth1", "host_dev_name": "tap0"})",
       "iface_id 'eth1' in the body does not match 'eth0' in the path"},
      {"PATCH", "/network-interfaces/eth0", R"({"iface_id": "eth1"})",
       "iface_id 'eth1' in the body does not match 'eth0' in the path"},
  };
  int calls = 0;
  for (const Case& c : cases) {
    HttpResponse r = Route({c.method, c.path, c.body}, Counting(&calls));
    EXPECT_EQ(r.status, 400) << c.method << " " << c.path;
    EXPECT_EQ(r.body, Fault(400, c.message).body) << c.method << " " << c.path;
  }
  EXPECT_EQ(calls, 0) << "nothing reaches the VMM";
}

TEST(RouterTest, DeeplyNestedBodiesAreRefused) {
  int calls = 0;
  for (const std::string& body :
       {std::string(51200, '['), R"({"vcpu_count":)" + std::string(1 << 20, '[')}) {
    HttpResponse r = Route({"PUT", "/machine-config", body}, Counting(&calls));
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("JSON nested deeper than 64 levels"), std::string::npos) << r.body;
  }
  EXPECT_EQ(calls, 0);
}

TEST(RouterTest, AnIdMissingFromTheBodyIsNamed) {
  int calls = 0;
  HttpResponse r = Route(
      {"PUT", "/drives/rootfs", R"({"path_on_host": "/x", "is_root_device": false})"},
      Counting(&calls));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("drive_id is required"), std::string::npos) << r.body;
  r = Route({"PATCH", "/network-interfaces/eth0", R"({"iface_id": 7})"}, Counting(&calls));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("iface_id must be a string"), std::string::npos) << r.body;
  EXPECT_EQ(calls, 0);
}

TEST(RouterTest, PathsNotServedAreNamed) {
  int calls = 0;
  auto message = [&](const char* method, const char* path) {
    return Route({method, path, "{}"}, Counting(&calls)).body;
  };
  EXPECT_EQ(message("GET", "/no/such/path"), Fault(400, "unknown path /no/such/path").body);
  EXPECT_EQ(message("PUT", "/drives"), Fault(400, "unknown path /drives").body);
  EXPECT_EQ(message("PUT", "/drives/"), Fault(400, "unknown path /drives/").body);
  EXPECT_EQ(message("PUT", "/drives/a/b"), Fault(400, "unknown path /drives/a/b").body);
  EXPECT_EQ(message("GET", "/vm/"), Fault(400, "unknown path /vm/").body);
  EXPECT_EQ(message("DELETE", "/machine-config"),
            Fault(400, "DELETE is not allowed on /machine-config").body);
  EXPECT_EQ(message("GET", "/drives/rootfs"),
            Fault(400, "GET is not allowed on /drives/rootfs").body);
  EXPECT_EQ(message("POST", "/version"), Fault(400, "POST is not allowed on /version").body);
  for (const char* p : kNotYetPaths) {
    for (std::string path : {std::string(p), std::string(p) + "/x"}) {
      EXPECT_EQ(message("PUT", path.c_str()),
                Fault(400, path + " is not supported by Ember yet").body);
    }
  }
  EXPECT_EQ(calls, 0);
}

TEST(RouterTest, BodiesAreReadOnlyWhereTheRouteTakesOne) {
  int calls = 0;
  HttpResponse r = Route({"PUT", "/machine-config", R"({"vcpu_count": )"}, Counting(&calls));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("malformed JSON"), std::string::npos) << r.body;
  EXPECT_EQ(Route({"PATCH", "/balloon", "[1]"}, Counting(&calls)).status, 400);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(Route({"GET", "/machine-config", "not JSON"}, Counting(&calls)).status, 204);
  EXPECT_EQ(calls, 1);
}

TEST(RouterTest, ResultsAreWrittenAsFirecrackerWritesThem) {
  auto answer = [](VmmResult result) {
    return Route({"GET", "/", ""}, [&](VmmAction) -> absl::StatusOr<VmmResult> {
      return result;
    });
  };
  EXPECT_EQ(answer(std::monostate()).status, 204);
  EXPECT_EQ(answer(std::monostate()).body, "");
  HttpResponse r = answer(InstanceInfo{"vm1", "Running", "1.2.3"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"id":"vm1","state":"Running","vmm_version":"1.2.3","app_name":"Ember"})");
  EXPECT_EQ(answer(MachineConfig{2, 256, true}).body,
            R"({"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true})");
  EXPECT_EQ(answer(BalloonConfig{64, true, 5}).body,
            R"({"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5})");
  BalloonStats stats{512, 256, {{0, 1}, {4, 1000}, {99, 5}}};
  EXPECT_EQ(answer(stats).body,
            R"({"target_pages":512,"actual_pages":256,"target_mib":2,"actual_mib":1,)"
            R"("swap_in":1,"free_memory":1000})")
      << "tags Firecracker has no name for are left out";
  VmConfig config;
  config.boot_source = BootSourceConfig{"/k", "", std::nullopt};
  EXPECT_EQ(answer(config).body, VmConfigToJson(config));
}

}  // namespace
}  // namespace ember::api
