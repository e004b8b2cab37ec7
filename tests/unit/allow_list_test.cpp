#include <doctest/doctest.h>

#include "policy/allow_list.hpp"

using namespace tunnel::policy;

namespace {
peer_identity client() {
  peer_identity id;
  id.cn = "client-a";
  id.dns = {"client-a.plant.example"};
  id.uri = {"spiffe://plant/poller"};
  id.ip = {"10.9.8.7", "2001:db8::7"};
  id.spki.fill(0xab);
  return id;
}
}  // namespace

TEST_CASE("an empty allow-list admits every certificate of the CA") {
  CHECK(allow_list{}.allows(client()));
}

TEST_CASE("each kind of entry admits a matching peer and only that") {
  allow_list l;
  l.cn = {"client-a"};
  CHECK(l.allows(client()));
  l.cn = {"client-b"};
  CHECK(!l.allows(client()));

  allow_list d;
  d.dns = {"CLIENT-A.plant.example"};  // DNS names compare case-insensitively
  CHECK(d.allows(client()));
  d.dns = {"*.plant.example"};  // no wildcard expansion
  CHECK(!d.allows(client()));

  allow_list u;
  u.uri = {"spiffe://plant/poller"};
  CHECK(u.allows(client()));
  u.uri = {"spiffe://plant/other"};
  CHECK(!u.allows(client()));

  allow_list i;
  i.ip = {*canonical_ip("2001:DB8:0:0::7")};
  CHECK(i.allows(client()));
  i.ip = {*canonical_ip("10.9.8.8")};
  CHECK(!i.allows(client()));

  allow_list s;
  spki_digest pin;
  pin.fill(0xab);
  s.spki = {pin};
  CHECK(s.allows(client()));
  pin[31] = 0;
  s.spki = {pin};
  CHECK(!s.allows(client()));
}

TEST_CASE("a peer matching any entry of any kind is admitted") {
  allow_list l;
  l.cn = {"someone-else"};
  l.uri = {"spiffe://plant/poller"};
  CHECK(l.allows(client()));
}

TEST_CASE("CN entries do not match an absent CN") {
  allow_list l;
  l.cn = {""};
  peer_identity id;
  CHECK(!l.allows(id));
}

TEST_CASE("IP addresses are canonicalised, v4-mapped v6 becomes v4") {
  CHECK(canonical_ip("::ffff:10.0.0.1") == "10.0.0.1");
  CHECK(canonical_ip("2001:DB8::1") == "2001:db8::1");
  CHECK(!canonical_ip("10.0.0.256"));
  CHECK(!canonical_ip("host"));
}

TEST_CASE("SPKI pins parse from hex with optional colons") {
  const std::string hex(64, 'a');
  auto d = parse_spki_hex(hex);
  REQUIRE(d);
  CHECK((*d)[0] == 0xaa);
  CHECK(to_hex(*d) == hex);
  CHECK(parse_spki_hex("AB:" + std::string(62, 'c')));
  CHECK(!parse_spki_hex(std::string(63, 'a')));
  CHECK(!parse_spki_hex(std::string(66, 'a')));
  CHECK(!parse_spki_hex(std::string(64, 'g')));
}
