#pragma once
// Two TLS engines, a client and a server, wired to each other in memory: the fixture and the
// pumps the engine and resumption tests share.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <mbedtls/ssl.h>
#include <memory>
#include <string>

#include "test_pki.hpp"
#include "tls/engine.hpp"

namespace tunnel::unit {

struct pair_fixture {
  ::test::temp_pki pki;
  tls::credential_files server_files, client_files;
  std::shared_ptr<tls::tls_context> server_ctx, client_ctx;

  explicit pair_fixture(tls::tls_options server_opts = {}, tls::tls_options client_opts = {},
                        bool foreign_client = false) {
    server_opts.side = tls::role::server;
    client_opts.side = tls::role::client;
    if (!client_opts.server_name && client_opts.pins.empty()) client_opts.server_name = "tunnel-out.test";
    server_files = pki.files("server", {.common_name = "tunnel-out", .dns = {"tunnel-out.test"},
                                             .ip = {"127.0.0.1"}, .purpose = tls::usage::server});
    client_files = pki.files("client", {.common_name = "client-a", .dns = {"client-a.test"},
                                             .uri = {"spiffe://unit/client-a"}, .purpose = tls::usage::client},
                                  foreign_client);
    server_ctx = std::make_shared<tls::tls_context>(server_opts, tls::credentials::load(server_files));
    client_ctx = std::make_shared<tls::tls_context>(client_opts, tls::credentials::load(client_files));
  }
};

// Moves up to `chunk` bytes at a time from one engine's output to the other's input.
inline bool transfer(tls::engine& from, tls::engine& to, std::size_t chunk) {
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
inline std::pair<int, int> handshake(tls::engine& client, tls::engine& server, std::size_t chunk) {
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

inline std::string receive_all(tls::engine& from, tls::engine& to, std::size_t expected, std::size_t chunk) {
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

inline std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

inline void exchange_both_ways(tls::engine& client, tls::engine& server, std::size_t chunk) {
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

}  // namespace tunnel::unit
