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
  config_file f(std::string(creds) + "idle-timeout = \"5m\"\nthreads = 3\nbusy-poll = 50\n"
                "[services.a]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\n"
                "[services.b]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:10\"\nidle-timeout = \"30s\"\n"
                "allow-cn = [\"x\", \"y\"]\n");
  const auto cfg = config::load_file(tls::role::server, f.path);
  REQUIRE(cfg.services.size() == 2);
  CHECK(cfg.services[0].name == "a");
  CHECK(cfg.services[0].limits.idle == std::chrono::minutes(5));
  CHECK(cfg.services[1].limits.idle == std::chrono::seconds(30));
  CHECK(cfg.services[1].threads == 3);
  CHECK(cfg.services[1].busy_poll == std::chrono::microseconds(50));
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

TEST_CASE("UDP over TLS: defaults, the TLS leg, and which TCP service's connections it may ride") {
  config_file f(std::string(creds) + "connect = \"gw.example:8443\"\nserver-name = \"gw.example\"\n"
                "[services.db]\nlisten = \"127.0.0.1:0\"\n"
                "[services.logs]\nudp = true\nlisten = \"127.0.0.1:0\"\ntls-fallback = \"gw.example:9443\"\n"
                "[services.dns]\nudp = true\nudp-over-tls = true\nlisten = \"127.0.0.1:0\"\n"
                "[services.ntp]\nudp = true\nlisten = \"127.0.0.1:0\"\nconnect = \"gw.example:123\"\n"
                "tls-fallback = \"off\"\n");
  const auto cfg = config::load_file(tls::role::client, f.path);
  REQUIRE(cfg.services.size() == 4);
  const auto& by = [&](const std::string& name) -> const config::service& {
    for (const auto& s : cfg.services)
      if (s.name == name) return s;
    FAIL("no service " << name);
    return cfg.services.front();
  };
  const auto& logs = by("logs");
  CHECK_FALSE(logs.udp.over_tls);
  REQUIRE(logs.udp.tls_target);
  CHECK(logs.udp.tls_target->to_string() == "gw.example:9443");
  CHECK(logs.udp.dtls_retry == std::chrono::seconds(60));
  CHECK(logs.mux.pool == 1);  // flows live on one thread
  CHECK_FALSE(by("ntp").udp.tls_target);
  const auto leg = config::tls_leg_of(by("dns"));
  CHECK(leg.target.to_string() == "gw.example:8443");
  CHECK(leg.tls.carrier == tls::transport::stream);
  CHECK(leg.tls.mux_alpn);
  CHECK(leg.tls.sni == "dns");
  CHECK_FALSE(leg.udp.enabled);
  // dns goes where db goes, with the same credentials: it may ride db's connections.
  CHECK(config::same_tunnel(by("db"), leg));
  // logs' TLS leg goes elsewhere.
  CHECK_FALSE(config::same_tunnel(by("db"), config::tls_leg_of(logs)));
}

TEST_CASE("a UDP service over TLS shares its TLS port by the rules of the port") {
  const std::string udp_on_8443 =
      "[services.logs]\nudp = true\nudp-over-tls = true\nlisten = \"127.0.0.1:6514\"\ntarget = \"127.0.0.1:514\"\n"
      "tls-listen = \"127.0.0.1:8443\"\n";
  const std::string tcp_on_8443 = "[services.db]\nlisten = \"127.0.0.1:8443\"\ntarget = \"127.0.0.1:5432\"\n";
  CHECK(error_of(tls::role::server, std::string(creds) + tcp_on_8443 + udp_on_8443) == "(no error)");
  CHECK(error_of(tls::role::server, std::string(creds) + tcp_on_8443 + udp_on_8443 + "keepalive = \"5s\"\n") ==
        "site.toml:13: services.logs.keepalive: differs from services.db, which listens on 127.0.0.1:8443 too "
        "(services on one port share its TLS settings)");
  CHECK(error_of(tls::role::server, std::string(creds) + tcp_on_8443 + udp_on_8443 + "service = \"DB\"\n") ==
        "site.toml:13: services.logs.service: service name DB is also services.db's on 127.0.0.1:8443");
  CHECK(error_of(tls::role::server, std::string(creds) +
                                        "[services.logs]\nudp = true\nlisten = \"127.0.0.1:6514\"\n"
                                        "target = \"127.0.0.1:514\"\ntls-listen = \"127.0.0.1:8443\"\n") ==
        "site.toml:8: services.logs.tls-listen: only with udp-over-tls");
  // Without udp-over-tls a UDP service and a TCP service on one address are two sockets.
  CHECK(error_of(tls::role::server, std::string(creds) + tcp_on_8443 +
                                        "[services.logs]\nudp = true\nlisten = \"127.0.0.1:8443\"\n"
                                        "target = \"127.0.0.1:514\"\n") == "(no error)");
}
