#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "config/file.hpp"
#include "config/flags.hpp"

using namespace tunnel;

namespace {

// A config file in a private directory, removed at the end of the test.
struct config_file {
  std::string dir, path;
  explicit config_file(const std::string& text) {
    char tmpl[] = "/tmp/config-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
    path = dir + "/site.toml";
    std::ofstream(path) << text;
  }
  ~config_file() { std::system(("rm -rf " + dir).c_str()); }
};

std::string error_of(tls::role side, const std::string& text) {
  config_file f(text);
  try {
    config::load_file(side, f.path);
  } catch (const config::usage_error& e) {
    std::string msg = e.what();
    return msg.substr(msg.find("site.toml"));
  }
  return "(no error)";
}

const char* creds = "cert = \"c.crt\"\nkey = \"c.key\"\nca = \"ca.crt\"\n";

}  // namespace

TEST_CASE("top-level keys are defaults a service table overrides") {
  config_file f(std::string(creds) + "idle-timeout = \"5m\"\nthreads = 3\n"
                "[services.a]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\n"
                "[services.b]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:10\"\nidle-timeout = \"30s\"\n"
                "allow-cn = [\"x\", \"y\"]\n");
  const auto cfg = config::load_file(tls::role::server, f.path);
  REQUIRE(cfg.services.size() == 2);
  CHECK(cfg.services[0].name == "a");
  CHECK(cfg.services[0].limits.idle == std::chrono::minutes(5));
  CHECK(cfg.services[1].limits.idle == std::chrono::seconds(30));
  CHECK(cfg.services[1].threads == 3);
  CHECK(cfg.services[1].tls.routes.front().allow.cn == std::vector<std::string>{"x", "y"});
  CHECK(cfg.services[0].tls.routes.front().allow.empty());
  // Relative file names are taken from the file's directory.
  CHECK(cfg.services[0].files.cert == f.dir + "/c.crt");
}

TEST_CASE("the service key renames a service; tunnel-in sends the name as SNI for TCP only") {
  config_file f(std::string(creds) + "connect = \"gw.example:8443\"\n"
                "[services.pg]\nlisten = \"127.0.0.1:0\"\nservice = \"postgres\"\n"
                "[services.log]\nudp = true\nlisten = \"127.0.0.1:0\"\n");
  const auto cfg = config::load_file(tls::role::client, f.path);
  CHECK(cfg.services[1].name == "postgres");
  CHECK(cfg.services[1].tls.sni == "postgres");
  CHECK(cfg.services[1].tls.server_name == "gw.example");
  CHECK_FALSE(cfg.services[0].tls.sni);
}

TEST_CASE("mistakes name the file, the line and the key") {
  const std::string svc = "[services.a]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\n";
  CHECK(error_of(tls::role::server, std::string(creds) + svc + "mtu = 1400\n") ==
        "site.toml:7: services.a.mtu: only with udp");
  CHECK(error_of(tls::role::server, std::string(creds) + svc + "udp = \"yes\"\n") ==
        "site.toml:7: services.a.udp: expected true or false");
  CHECK(error_of(tls::role::server, std::string(creds) + svc + "allow-cn = [1]\n") ==
        "site.toml:7: services.a.allow-cn: expected a string");
  CHECK(error_of(tls::role::server, std::string(creds) + "[services.a]\ntarget = \"127.0.0.1:9\"\n") ==
        "site.toml:4: services.a: listen is required");
  CHECK(error_of(tls::role::server, std::string(creds) + "[services.a]\nlisten = \"127.0.0.1:0\"\n") ==
        "site.toml:4: services.a: target is required");
  CHECK(error_of(tls::role::server, std::string(creds) + "[services.a]\nlisten = \"127.0.0.1:0\"\nconnect = \"x:1\"\n") ==
        "site.toml:6: services.a.connect: unknown key");
  CHECK(error_of(tls::role::server, std::string(creds) + "check-config = true\n" + svc) ==
        "site.toml:4: check-config: unknown key");
  CHECK(error_of(tls::role::server, std::string(creds) + "[other]\nx = 1\n") ==
        "site.toml:4: other: unknown table (services go in [services.NAME])");
  CHECK(error_of(tls::role::server, creds) == "site.toml: no services: add a [services.NAME] table");
  CHECK(error_of(tls::role::server, std::string(creds) + "[services.\"my db\"]\nlisten = \"127.0.0.1:0\"\n"
                 "target = \"127.0.0.1:9\"\n").rfind("site.toml:4: services.my db: my db: use 1-63", 0) == 0);
}
