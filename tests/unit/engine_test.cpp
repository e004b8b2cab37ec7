#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mbedtls/ssl.h>

#include "engine_pair.hpp"

using namespace tunnel;
using namespace tunnel::unit;

TEST_CASE("engine pair handshakes TLS 1.3 with mutual auth and exchanges data") {
  pair_fixture f;
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  REQUIRE(crc == 0);
  REQUIRE(src == 0);
  CHECK(client.version() == "TLSv1.3");
  REQUIRE(server.peer());
  CHECK(server.peer()->cn == "client-a");
  CHECK(server.peer()->uri == std::vector<std::string>{"spiffe://unit/client-a"});
  REQUIRE(client.peer());
  CHECK(client.peer()->cn == "tunnel-out");
  exchange_both_ways(client, server, 1 << 20);
}

TEST_CASE("engine pair works with ciphertext delivered one byte at a time") {
  pair_fixture f;
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1);
  REQUIRE(crc == 0);
  REQUIRE(src == 0);
  exchange_both_ways(client, server, 1);
}

TEST_CASE("close_notify reads as a clean end and the other direction keeps working") {
  pair_fixture f;
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  REQUIRE((crc == 0 && src == 0));
  REQUIRE(client.close_notify() == 0);
  transfer(client, server, 1 << 20);
  std::byte buf[64];
  CHECK(server.read(buf) == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
  const std::string late = "reply after half-close";
  REQUIRE(server.write(bytes(late)) == static_cast<int>(late.size()));
  CHECK(receive_all(server, client, late.size(), 1 << 20) == late);
}

TEST_CASE("a client off the allow-list is refused during the handshake") {
  tls::tls_options server_opts;
  server_opts.routes.front().allow.cn = {"client-b"};
  pair_fixture f(server_opts);
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  CHECK(src != 0);
  CHECK(server.refused_by_policy());
  CHECK(server.verify_failure() == "peer certificate not on the allow-list");
  REQUIRE(server.peer());
  CHECK(server.peer()->cn == "client-a");
}

TEST_CASE("a client from a foreign CA is refused") {
  pair_fixture f({}, {}, true);
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  CHECK(src != 0);
  CHECK(!server.refused_by_policy());
  CHECK(server.verify_failure().find("not correctly signed") != std::string::npos);
}

TEST_CASE("the client refuses a server without the expected name") {
  tls::tls_options client_opts;
  client_opts.server_name = "other.test";
  pair_fixture f({}, client_opts);
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  CHECK(crc != 0);
  CHECK(client.verify_failure().find("CN") != std::string::npos);
}

TEST_CASE("a server key pin replaces the name check and must match") {
  tls::tls_options wrong;
  wrong.pins = {policy::spki_digest{}};
  pair_fixture f({}, wrong);
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  CHECK(crc != 0);
  CHECK(client.refused_by_policy());
  CHECK(client.verify_failure() == "server key does not match any pin");
}

TEST_CASE("a record announced longer than TLS allows fails the handshake at once with record_overflow") {
  pair_fixture f;
  tls::engine server(f.server_ctx);
  // A handshake record header announcing 2^14 + 257 bytes, and none of the body.
  const unsigned char header[] = {22, 3, 3, 0x41, 0x01};
  auto space = server.input_space();
  std::memcpy(space.data(), header, sizeof header);
  server.commit_input(sizeof header);
  CHECK(server.record_overflow());
  CHECK(server.handshake() == MBEDTLS_ERR_SSL_INVALID_RECORD);
  // A fatal record_overflow alert (22) is queued for the peer.
  const auto& out = server.output();
  REQUIRE(out.size() == 7);
  CHECK(out[0] == 21);
  CHECK(out[5] == MBEDTLS_SSL_ALERT_LEVEL_FATAL);
  CHECK(out[6] == MBEDTLS_SSL_ALERT_MSG_RECORD_OVERFLOW);
}

TEST_CASE("an engine whose handshake failed before a cipher suite was chosen describes itself") {
  pair_fixture f;
  tls::engine server(f.server_ctx);
  const std::string garbage = "GET / HTTP/1.1\r\n\r\n";
  auto space = server.input_space();
  std::memcpy(space.data(), garbage.data(), garbage.size());
  server.commit_input(garbage.size());
  CHECK(server.handshake() < 0);
  CHECK(server.ciphersuite().empty());  // mbedTLS has no suite to name: NULL, not a crash
  CHECK(!server.version().empty());
}

TEST_CASE("a handshake a reload overtook: the allow-list in force decides, and a changed CA checks the chain again") {
  pair_fixture f;
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  REQUIRE(crc == 0);
  REQUIRE(src == 0);
  const auto rebuilt = [&](tls::tls_options opts, tls::credential_files files) {
    return std::make_shared<tls::tls_context>(std::move(opts), tls::credentials::load(files));
  };
  // The same files (a reload that renewed nothing the chain check uses): admitted.
  const auto same = rebuilt(f.server_ctx->options(), f.server_files);
  CHECK(same->trust_digest() == f.server_ctx->trust_digest());
  CHECK(server.admitted_after_reload(*same));
  // The client taken off the allow-list.
  auto narrower = f.server_ctx->options();
  narrower.routes.front().allow.cn = {"client-b"};
  CHECK_FALSE(server.admitted_after_reload(*rebuilt(narrower, f.server_files)));
  // Another CA bundle (the old CA withdrawn): the chain no longer verifies.
  auto other_ca = f.server_files;
  other_ca.ca = f.pki.path("foreign-ca.crt");
  const auto withdrawn = rebuilt(f.server_ctx->options(), other_ca);
  CHECK(withdrawn->trust_digest() != f.server_ctx->trust_digest());
  CHECK_FALSE(server.admitted_after_reload(*withdrawn));
  // The client side, the same way: tunnel-out's chain checked against the CA in force.
  CHECK(client.admitted_after_reload(*rebuilt(f.client_ctx->options(), f.client_files)));
  auto client_other_ca = f.client_files;
  client_other_ca.ca = f.pki.path("foreign-ca.crt");
  CHECK_FALSE(client.admitted_after_reload(*rebuilt(f.client_ctx->options(), client_other_ca)));
}
