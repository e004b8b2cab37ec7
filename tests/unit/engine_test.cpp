#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mbedtls/ssl.h>

#include "test_pki.hpp"
#include "tls/engine.hpp"

using namespace tunnel;

namespace {

struct pair_fixture {
  test::temp_pki pki;
  std::shared_ptr<tls::tls_context> server_ctx, client_ctx;

  explicit pair_fixture(tls::tls_options server_opts = {}, tls::tls_options client_opts = {},
                        bool foreign_client = false) {
    server_opts.side = tls::role::server;
    client_opts.side = tls::role::client;
    if (!client_opts.server_name && client_opts.pins.empty()) client_opts.server_name = "tunnel-out.test";
    auto server_files = pki.files("server", {.common_name = "tunnel-out", .dns = {"tunnel-out.test"},
                                             .ip = {"127.0.0.1"}, .purpose = tls::usage::server});
    auto client_files = pki.files("client", {.common_name = "client-a", .dns = {"client-a.test"},
                                             .uri = {"spiffe://unit/client-a"}, .purpose = tls::usage::client},
                                  foreign_client);
    server_ctx = std::make_shared<tls::tls_context>(server_opts, tls::credentials::load(server_files));
    client_ctx = std::make_shared<tls::tls_context>(client_opts, tls::credentials::load(client_files));
  }
};

// Moves up to `chunk` bytes at a time from one engine's output to the other's input.
bool transfer(tls::engine& from, tls::engine& to, std::size_t chunk) {
  auto& out = from.output();
  if (out.empty()) return false;
  std::size_t moved = 0;
  while (moved < out.size()) {
    auto space = to.input_space();
    const std::size_t n = std::min({chunk, space.size(), out.size() - moved});
    if (n == 0) break;
    std::memcpy(space.data(), out.data() + moved, n);
    to.commit_input(n);
    moved += n;
    if (chunk < out.size()) break;  // deliver in small pieces: let the peer run between them
  }
  out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(moved));
  return true;
}

// Runs both handshakes to completion or failure; returns {client rc, server rc}.
std::pair<int, int> handshake(tls::engine& client, tls::engine& server, std::size_t chunk) {
  int crc = MBEDTLS_ERR_SSL_WANT_READ, src = MBEDTLS_ERR_SSL_WANT_READ;
  for (int i = 0; i < 200000; ++i) {
    if (crc == MBEDTLS_ERR_SSL_WANT_READ) crc = client.handshake();
    const bool c_out = transfer(client, server, chunk);
    if (src == MBEDTLS_ERR_SSL_WANT_READ) src = server.handshake();
    const bool s_out = transfer(server, client, chunk);
    const bool c_done = crc != MBEDTLS_ERR_SSL_WANT_READ, s_done = src != MBEDTLS_ERR_SSL_WANT_READ;
    if (c_done && s_done && !c_out && !s_out) break;
    if ((c_done || s_done) && !c_out && !s_out && client.output().empty() && server.output().empty()) {
      // One side finished or failed and nothing is in flight: the other cannot progress.
      if (i > 10) break;
    }
  }
  return {crc, src};
}

std::string receive_all(tls::engine& from, tls::engine& to, std::size_t expected, std::size_t chunk) {
  std::string got;
  std::byte buf[4096];
  for (int i = 0; i < 1000000 && got.size() < expected; ++i) {
    transfer(from, to, chunk);
    const int rc = to.read(buf);
    if (rc > 0) got.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(rc));
    else if (rc != MBEDTLS_ERR_SSL_WANT_READ) break;
  }
  return got;
}

std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

void exchange_both_ways(tls::engine& client, tls::engine& server, std::size_t chunk) {
  std::string request(40000, 'q');
  for (std::size_t i = 0; i < request.size(); ++i) request[i] = static_cast<char>('a' + i % 26);
  std::size_t sent = 0;
  while (sent < request.size()) {
    const int rc = client.write(bytes(request).subspan(sent));
    REQUIRE(rc > 0);
    sent += static_cast<std::size_t>(rc);
  }
  CHECK(receive_all(client, server, request.size(), chunk) == request);
  const std::string reply = "reply from the legacy server";
  REQUIRE(server.write(bytes(reply)) == static_cast<int>(reply.size()));
  CHECK(receive_all(server, client, reply.size(), chunk) == reply);
}

}  // namespace

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
