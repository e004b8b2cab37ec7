#include <doctest/doctest.h>

#include "net/address.hpp"

using tunnel::net::parse_address;

TEST_CASE("host:port, [v6]:port and unix:/path parse") {
  std::string why;
  auto a = parse_address("db.example.net:5432", why);
  REQUIRE(a);
  CHECK(a->host == "db.example.net");
  CHECK(a->port == 5432);
  CHECK(!a->is_unix());

  auto v4 = parse_address("127.0.0.1:1", why);
  REQUIRE(v4);
  CHECK(v4->to_string() == "127.0.0.1:1");

  auto v6 = parse_address("[::1]:8443", why);
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->to_string() == "[::1]:8443");

  auto u = parse_address("unix:/run/app.sock", why);
  REQUIRE(u);
  CHECK(u->is_unix());
  CHECK(u->path == "/run/app.sock");
  CHECK(u->to_string() == "unix:/run/app.sock");
}

TEST_CASE("port zero only where a listener lets the kernel choose") {
  std::string why;
  CHECK(!parse_address("127.0.0.1:0", why));
  CHECK(parse_address("127.0.0.1:0", why, true));
}

TEST_CASE("malformed addresses are refused with a reason") {
  for (const char* bad : {"", "host", "host:", ":80", "host:65536", "host:-1", "host:80x", "::1:80",
                          "[::1]80", "[::1]:", "[nothost]:80", "[::1:80", "unix:", "unix:relative/path",
                          "bad host:80", "a/b:80"}) {
    std::string why;
    CHECK_MESSAGE(!parse_address(bad, why), bad);
    CHECK_MESSAGE(!why.empty(), bad);
  }
  std::string why;
  CHECK(!parse_address("unix:/" + std::string(200, 'x'), why));
}
