#include "api/router.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <regex>

#include "api/routes.h"
#include "api/vm_config_json.h"
#include "src/common/log.h"

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
    for (const std::string method : {"GET", "PUT", "PATCH", "DELETE", "POST"}) {
      HttpResponse r = Route({method, Concrete(path), method == "GET" ? "" : "{}"}, runner);
      bool served = methods.count(method) > 0;
      if (served) {
        EXPECT_EQ(r.body.find("Invalid request method"), std::string::npos)
            << method << " " << path;
      } else {
        EXPECT_EQ(r.status, 400) << method << " " << path;
        EXPECT_EQ(r.body, Fault(400, "Invalid request method and/or path: " + method + " " +
                                         Concrete(path) + ".")
                              .body);
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
       "The id from the path [rootfs] does not match the id from the body [data]!"},
      {"PATCH", "/drives/rootfs", R"({"drive_id": "data", "path_on_host": "/x"})",
       "The id from the path [rootfs] does not match the id from the body [data]!"},
      {"PUT", "/network-interfaces/eth0", R"({"iface_id": "eth1", "host_dev_name": "tap0"})",
       "The id from the path [eth0] does not match the id from the body [eth1]!"},
      {"PATCH", "/network-interfaces/eth0", R"({"iface_id": "eth1"})",
       "The id from the path [eth0] does not match the id from the body [eth1]!"},
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

// As serde_json: every string of a body is UTF-8, raw or escaped.
TEST(RouterTest, BodiesThatAreNotUtf8AreRefused) {
  int calls = 0;
  for (const std::string& body :
       {std::string("{\"kernel_image_path\":\"/k\",\"boot_args\":\"a\xff\"}"),
        std::string(R"({"kernel_image_path":"/k","boot_args":"a\udc00"})")}) {
    HttpResponse r = Route({"PUT", "/boot-source", body}, Counting(&calls));
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("boot_args is not valid UTF-8"), std::string::npos) << r.body;
  }
  EXPECT_EQ(calls, 0);
  HttpResponse r = Route(
      {"PUT", "/boot-source", "{\"kernel_image_path\":\"/k\\u00e9\xc3\xa9\",\"boot_args\":\"a\"}"},
      Counting(&calls));
  EXPECT_EQ(calls, 1) << "UTF-8 beyond ASCII is taken: " << r.body;
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
  auto invalid = [](const std::string& what) {
    return Fault(400, "Invalid request method and/or path: " + what + ".").body;
  };
  EXPECT_EQ(message("PUT", "/no/such/path"), invalid("PUT /no/such/path"));
  EXPECT_EQ(message("PUT", "/drives/a/b"), invalid("PUT /drives/a/b"));
  EXPECT_EQ(message("PATCH", "/vm/x"), invalid("PATCH /vm/x"));
  EXPECT_EQ(message("DELETE", "/machine-config"), invalid("DELETE /machine-config"));
  EXPECT_EQ(message("PATCH", "/boot-source"), invalid("PATCH /boot-source"));
  EXPECT_EQ(message("POST", "/version"), invalid("POST /version"));
  EXPECT_EQ(Route({"GET", "/drives/rootfs", ""}, Counting(&calls)).body,
            invalid("GET /drives/rootfs"));
  EXPECT_EQ(message("PUT", "/hotplug/memory/x"), invalid("PUT /hotplug/memory/x"));
  EXPECT_EQ(calls, 0);
}

// Firecracker trims every leading '/' and splits without a last empty
// segment, so a client that adds a slash at either end is served.
TEST(RouterTest, SlashesAtTheEndsAreRoutedAsFirecrackerRoutesThem) {
  EXPECT_EQ(RoutedPath("//machine-config/?x=1"), "/machine-config");
  EXPECT_EQ(RoutedPath("/"), "/");
  EXPECT_EQ(RoutedPath("/drives//"), "/drives/");
  EXPECT_EQ(RoutedPath("http://localhost/version?x=1"), "/version");
  EXPECT_EQ(RoutedPath("HTTP://localhost"), "/");
  int calls = 0;
  EXPECT_EQ(Route({"GET", "//machine-config/", ""}, Counting(&calls)).status, 204);
  HttpResponse r = Route(
      {"PUT", "/drives/rootfs/",
       R"({"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": true})"},
      Counting(&calls));
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(calls, 2);
  for (const char* path : {"/drives/", "/drives//"}) {
    r = Route({"PUT", path, "{}"}, Counting(&calls));
    EXPECT_NE(r.body.find("The ID cannot be empty"), std::string::npos) << path << r.body;
  }
  EXPECT_EQ(calls, 2);
}

TEST(RouterTest, BodiesAreReadOnlyWhereTheRouteTakesOne) {
  int calls = 0;
  HttpResponse r = Route({"PUT", "/machine-config", R"({"vcpu_count": )"}, Counting(&calls));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("malformed JSON"), std::string::npos) << r.body;
  EXPECT_EQ(Route({"PATCH", "/balloon", "[1]"}, Counting(&calls)).status, 400);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(Route({"GET", "/machine-config", ""}, Counting(&calls)).status, 204);
  EXPECT_EQ(calls, 1);
}

// Firecracker's answers, whatever the path: a GET must have no body, a PUT
// or PATCH one.
TEST(RouterTest, AGetWithABodyAndAPutOrPatchWithoutOneAreRefused) {
  int calls = 0;
  for (const char* path : {"/machine-config", "/version", "/", "/no/such/path"}) {
    EXPECT_EQ(Route({"GET", path, "{}"}, Counting(&calls)).body,
              Fault(400, "GET request cannot have a body.").body)
        << path;
  }
  EXPECT_EQ(Route({"PUT", "/machine-config", ""}, Counting(&calls)).body,
            Fault(400, "Empty PUT request.").body);
  EXPECT_EQ(Route({"PATCH", "/drives/rootfs", ""}, Counting(&calls)).body,
            Fault(400, "Empty PATCH request.").body);
  EXPECT_EQ(Route({"PATCH", "/machine-config", "{}"}, Counting(&calls)).body,
            Fault(400, "Empty PATCH request.").body)
      << "a PATCH that changes nothing";
  EXPECT_EQ(Route({"PATCH", "/balloon", ""}, Counting(&calls)).body,
            Fault(400, "Empty PATCH request.").body);
  EXPECT_EQ(calls, 0);
}

// Firecracker takes the hinting run's start and stop without a body; the
// start then acknowledges the guest's stop.
TEST(RouterTest, HintingStartAndStopNeedNoBody) {
  std::vector<VmmAction> seen;
  auto run = [&](VmmAction a) -> absl::StatusOr<VmmResult> {
    seen.push_back(std::move(a));
    return std::monostate();
  };
  EXPECT_EQ(Route({"PATCH", "/balloon/hinting/start", ""}, run).status, 204);
  EXPECT_EQ(Route({"PATCH", "/balloon/hinting/stop", ""}, run).status, 204);
  EXPECT_EQ(Route({"PATCH", "/balloon/hinting/start", R"({"acknowledge_on_stop": false})"}, run)
                .status,
            204);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(std::get<StartBalloonHinting>(seen[0]).acknowledge_on_stop);
  EXPECT_TRUE(std::holds_alternative<StopBalloonHinting>(seen[1]));
  EXPECT_FALSE(std::get<StartBalloonHinting>(seen[2]).acknowledge_on_stop);
  HttpResponse bad =
      Route({"PATCH", "/balloon/hinting/start", R"({"acknowledge_on_stop": "no"})"}, run);
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("acknowledge_on_stop"), std::string::npos) << bad.body;
  EXPECT_EQ(seen.size(), 3u);
}

// Firecracker's rule for ids in paths: letters, digits and '_', not empty.
TEST(RouterTest, IdsInPathsFollowFirecrackersRule) {
  int calls = 0;
  auto put_drive = [&](const std::string& path, const std::string& id) {
    std::string body =
        R"({"drive_id": ")" + id + R"(", "path_on_host": "/x", "is_root_device": false})";
    return Route({"PUT", path, body}, Counting(&calls));
  };
  EXPECT_EQ(put_drive("/drives/root_FS9", "root_FS9").status, 204);
  EXPECT_EQ(calls, 1);
  const std::string bad_chars =
      "' in the path: API Resource IDs can only contain alphanumeric characters and "
      "underscores.";
  for (const char* id : {"root-fs", "a.b", "a%2Fb", "a b"}) {
    EXPECT_EQ(put_drive(std::string("/drives/") + id, id).body,
              Fault(400, std::string("drive_id '") + id + bad_chars).body);
  }
  for (const char* path : {"/drives", "/drives/"}) {
    EXPECT_EQ(put_drive(path, "").body,
              Fault(400, "drive_id in the path: The ID cannot be empty.").body)
        << path;
  }
  EXPECT_EQ(Route({"PATCH", "/network-interfaces/eth-0", R"({"iface_id": "eth-0"})"},
                  Counting(&calls))
                .body,
            Fault(400, "iface_id 'eth-0" + bad_chars).body);
  EXPECT_EQ(calls, 1);
}

TEST(RouterTest, DeprecatedFieldsAreTakenAndFlagged) {
  int calls = 0;
  struct Case {
    const char* method;
    const char* path;
    const char* body;
    bool deprecated;
  } cases[] = {
      {"PUT", "/vsock", R"({"vsock_id": "root", "guest_cid": 3, "uds_path": "/v"})", true},
      {"PUT", "/vsock", R"({"vsock_id": null, "guest_cid": 3, "uds_path": "/v"})", false},
      {"PUT", "/vsock", R"({"guest_cid": 3, "uds_path": "/v"})", false},
      {"PUT", "/machine-config",
       R"({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "None"})", true},
      {"PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})", false},
      {"PATCH", "/machine-config", R"({"cpu_template": "None"})", true},
      {"PATCH", "/machine-config", R"({"vcpu_count": 2})", false},
      {"PUT", "/snapshot/load", R"({"snapshot_path": "/s", "mem_file_path": "/m"})", true},
      {"PUT", "/snapshot/load",
       R"({"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"},
           "enable_diff_snapshots": true})",
       true},
      {"PUT", "/snapshot/load",
       R"({"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"},
           "enable_diff_snapshots": false})",
       false},
  };
  for (const Case& c : cases) {
    HttpResponse r = Route({c.method, c.path, c.body}, Counting(&calls));
    EXPECT_EQ(r.status, 204) << c.body << r.body;
    EXPECT_EQ(r.deprecated, c.deprecated) << c.body;
  }
  EXPECT_EQ(calls, static_cast<int>(std::size(cases)));
  // Flagged on the VMM's refusal too (Firecracker's test loads a snapshot
  // that does not exist); not when the body itself is refused.
  ActionRunner fail = [](VmmAction) -> absl::StatusOr<VmmResult> {
    return absl::InvalidArgumentError("no such snapshot");
  };
  HttpResponse r = Route(
      {"PUT", "/snapshot/load", R"({"snapshot_path": "/s", "mem_file_path": "/m"})"}, fail);
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(r.deprecated);
  r = Route({"PUT", "/vsock", R"({"vsock_id": "root", "guest_cid": 1, "uds_path": "/v"})"}, fail);
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(r.deprecated);
}

// What Ember logs while `run` runs.
std::string LogOf(const std::function<void()>& run) {
  int log_pipe[2];
  if (pipe2(log_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return "pipe2 failed";
  SetLogSink(log_pipe[1]);
  run();
  SetLogSink(-1);
  std::string log(1 << 16, '\0');
  ssize_t n = read(log_pipe[0], log.data(), log.size());
  log.resize(n > 0 ? n : 0);
  close(log_pipe[0]);
  close(log_pipe[1]);
  return log;
}

// The lines Firecracker's API server logs for each request.
TEST(RouterTest, RequestsAreLoggedAsFirecrackerLogsThem) {
  int calls = 0;
  std::string log = LogOf([&] {
    Route({"PUT", "/machine-config", "{\"vcpu_count\": 1,\n\"mem_size_mib\": 128}\x01"},
          Counting(&calls));
    Route({"PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})"},
          Counting(&calls));
    Route({"GET", "/machine-config?x=1", ""}, Counting(&calls));
    Route({"GET", "/version", ""}, Counting(&calls));
    Route({"PUT", "/vsock", R"({"vsock_id": "root", "guest_cid": 3, "uds_path": "/v"})"},
          Counting(&calls));
  });
  for (const char* line : {
           R"(The API server received a Put request on "/machine-config" with body )"
           R"("{\"vcpu_count\": 1,\n\"mem_size_mib\": 128}\u{1}".)",
           "Received Error. Status code: 400 Bad Request. Message: malformed JSON",
           R"(The API server received a Put request on "/machine-config" with body )"
           R"("{\"vcpu_count\": 1, \"mem_size_mib\": 128}".)",
           "The request was executed successfully. Status code: 204 No Content.\n",
           R"(The API server received a Get request on "/machine-config".)",
           R"(The API server received a Get request on "/version".)",
           "The request was executed successfully. Status code: 200 OK.\n",
           "PUT /vsock: vsock_id field is deprecated.\n"}) {
    EXPECT_NE(log.find(line), std::string::npos) << line << "\n--- log ---\n" << log;
  }
}

// MMDS bodies may hold secrets, whatever slashes the path has; a CPU
// template is long, so it is logged only at Debug, as Firecracker does.
TEST(RouterTest, MmdsBodiesAndCpuTemplatesStayOutOfTheLog) {
  int calls = 0;
  std::string log = LogOf([&] {
    Route({"PUT", "/mmds", R"({"token": "secret-one"})"}, Counting(&calls));
    Route({"PATCH", "//mmds/", R"({"token": "secret-two"})"}, Counting(&calls));
    Route({"PUT", "/mmds//", R"({"token": "secret-three"})"}, Counting(&calls));
    Route({"PATCH", "/mmds/x", R"({"token": "secret-four"})"}, Counting(&calls));
    Route({"PUT", "/mmds/config", R"({"version": "V2", "network_interfaces": ["shown"]})"},
          Counting(&calls));
    Route({"PUT", "/cpu-config", R"({"cpuid_modifiers": ["info-one"]})"}, Counting(&calls));
  });
  EXPECT_EQ(log.find("secret-"), std::string::npos) << log;
  EXPECT_NE(log.find("shown"), std::string::npos) << log;
  EXPECT_EQ(log.find("info-one"), std::string::npos) << log;
  EXPECT_NE(log.find(R"(Put request on "/cpu-config". To view the CPU template received by )"
                     "the API, configure log-level to DEBUG.\n"),
            std::string::npos)
      << log;
  SetLogLevel(LogLevel::kDebug);
  log = LogOf([&] {
    Route({"PUT", "/cpu-config", R"({"cpuid_modifiers": ["info-two"]})"}, Counting(&calls));
  });
  SetLogLevel(LogLevel::kInfo);
  EXPECT_NE(log.find("info-two"), std::string::npos) << log;
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
            R"({"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,)"
            R"("huge_pages":"None"})");
  EXPECT_EQ(answer(BalloonConfig{64, true, 5}).body,
            R"({"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5,)"
            R"("free_page_hinting":false,"free_page_reporting":false})");
  BalloonStats stats{512, 256, {{0, 1}, {4, 1000}, {10, 2}, {15, 3}, {99, 5}}};
  EXPECT_EQ(answer(stats).body,
            R"({"target_pages":512,"actual_pages":256,"target_mib":2,"actual_mib":1,)"
            R"("swap_in":1,"free_memory":1000,"oom_kill":2,"direct_reclaim":3})")
      << "tags Firecracker has no name for are left out";
  EXPECT_EQ(answer(BalloonHintingStatus{0, std::nullopt}).body,
            R"({"host_cmd":0,"guest_cmd":null})");
  EXPECT_EQ(answer(BalloonHintingStatus{1, 0}).body, R"({"host_cmd":1,"guest_cmd":0})");
  VmConfig config;
  config.boot_source = BootSourceConfig{"/k", "", std::nullopt};
  EXPECT_EQ(answer(config).body, VmConfigToJson(config));
}

}  // namespace
}  // namespace ember::api
