#include <doctest/doctest.h>

#include "policy/server_name.hpp"

using tunnel::policy::certifies_name;
using tunnel::policy::peer_identity;

namespace {
peer_identity server(std::vector<std::string> dns, std::vector<std::string> ip = {}, std::string cn = "gw") {
  peer_identity p;
  p.cn = std::move(cn);
  p.dns = std::move(dns);
  p.ip = std::move(ip);
  return p;
}
}  // namespace

TEST_CASE("a DNS SAN certifies its name, case-insensitively") {
  const auto p = server({"gw.plant.example", "localhost"});
  CHECK(certifies_name(p, "gw.plant.example"));
  CHECK(certifies_name(p, "GW.Plant.Example"));
  CHECK(certifies_name(p, "localhost"));
  CHECK_FALSE(certifies_name(p, "plant.example"));
  CHECK_FALSE(certifies_name(p, "gw.plant.example.evil"));
  CHECK_FALSE(certifies_name(p, ""));
}

TEST_CASE("a wildcard stands for exactly one leading label") {
  const auto p = server({"*.plant.example"});
  CHECK(certifies_name(p, "gw.plant.example"));
  CHECK_FALSE(certifies_name(p, "plant.example"));
  CHECK_FALSE(certifies_name(p, "a.b.plant.example"));
  CHECK_FALSE(certifies_name(p, ".plant.example"));
}

TEST_CASE("an IP address must be an IP SAN, compared in canonical form") {
  const auto p = server({"localhost"}, {"127.0.0.1", "::1"});
  CHECK(certifies_name(p, "127.0.0.1"));
  CHECK(certifies_name(p, "0:0::1"));
  CHECK_FALSE(certifies_name(p, "127.0.0.2"));
  CHECK_FALSE(certifies_name(server({"127.0.0.1"}), "127.0.0.1"));  // a DNS SAN is no IP SAN
}

TEST_CASE("the CN counts only without DNS and IP SANs") {
  CHECK(certifies_name(server({}, {}, "gw.plant.example"), "gw.plant.example"));
  CHECK_FALSE(certifies_name(server({"other.example"}, {}, "gw.plant.example"), "gw.plant.example"));
}
