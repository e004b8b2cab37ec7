#include <doctest/doctest.h>

#include <mbedtls/x509_crt.h>

#include "policy/peer_identity.hpp"
#include "policy/server_name.hpp"
#include "tls/pki.hpp"

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

TEST_CASE("any subjectAltName rules the CN out, a URI SAN alone included") {
  auto spiffe_only = server({}, {}, "gw.plant.example");
  spiffe_only.uri = {"spiffe://plant/other-workload"};
  spiffe_only.has_san = true;
  CHECK_FALSE(certifies_name(spiffe_only, "gw.plant.example"));
  auto email_only = server({}, {}, "gw.plant.example");
  email_only.has_san = true;  // an e-mail SAN: not parsed into a list, but a SAN all the same
  CHECK_FALSE(certifies_name(email_only, "gw.plant.example"));
}

TEST_CASE("identity_of notes a subjectAltName of any kind; a certificate without one keeps its CN") {
  const auto ca = tunnel::tls::make_ca({.common_name = "names-ca"});
  const auto parse = [](const std::string& pem) {
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    REQUIRE(mbedtls_x509_crt_parse(&crt, reinterpret_cast<const unsigned char*>(pem.c_str()), pem.size() + 1) == 0);
    auto id = tunnel::policy::identity_of(crt);
    mbedtls_x509_crt_free(&crt);
    return id;
  };
  const auto uri_only = parse(tunnel::tls::issue({.common_name = "gw.plant.example",
                                                  .uri = {"spiffe://plant/other-workload"}}, ca).cert_pem);
  CHECK(uri_only.has_san);
  CHECK_FALSE(certifies_name(uri_only, "gw.plant.example"));
  const auto bare = parse(tunnel::tls::issue({.common_name = "gw.plant.example"}, ca).cert_pem);
  CHECK_FALSE(bare.has_san);
  CHECK(certifies_name(bare, "gw.plant.example"));
}
