#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <mbedtls/ssl.h>
#include <string>
#include <vector>

#include "test_pki.hpp"
#include "tls/dtls_engine.hpp"
#include "tls/dtls_record.hpp"

using namespace tunnel;

namespace {

constexpr std::uint16_t mtu = 1400;
const std::string client_address = "4\x7f\x00\x00\x01\x13\x88";

struct dtls_pair {
  test::temp_pki pki;
  std::shared_ptr<tls::tls_context> server_ctx, client_ctx;
  std::unique_ptr<tls::dtls_engine> server, client;
  std::vector<unsigned char> server_cid{1, 2, 3, 4, 5, 6, 7, 8};

  explicit dtls_pair(tls::tls_options server_opts = {}) {
    server_opts.side = tls::role::server;
    server_opts.carrier = tls::transport::datagram;
    tls::tls_options client_opts;
    client_opts.side = tls::role::client;
    client_opts.carrier = tls::transport::datagram;
    client_opts.server_name = "tunnel-out.test";
    auto server_files = pki.files("server", {.common_name = "tunnel-out", .dns = {"tunnel-out.test"},
                                             .purpose = tls::usage::server});
    auto client_files = pki.files("client", {.common_name = "client-a", .purpose = tls::usage::client});
    server_ctx = std::make_shared<tls::tls_context>(server_opts, tls::credentials::load(server_files));
    client_ctx = std::make_shared<tls::tls_context>(client_opts, tls::credentials::load(client_files));
    server = std::make_unique<tls::dtls_engine>(server_ctx, mtu);
    client = std::make_unique<tls::dtls_engine>(client_ctx, mtu);
    REQUIRE(server->set_client_id(client_address) == 0);
    REQUIRE(server->enable_cid(server_cid) == 0);
    REQUIRE(client->enable_cid({}) == 0);
  }

  // Delivers each queued datagram of `from` to `to`, running `to` after each.
  static int deliver(tls::dtls_engine& from, tls::dtls_engine& to) {
    int rc = MBEDTLS_ERR_SSL_WANT_READ;
    auto queued = std::move(from.output());
    from.output().clear();
    for (const auto& d : queued) {
      to.feed(d);
      rc = to.handshake_done() ? MBEDTLS_ERR_SSL_WANT_READ : to.handshake();
    }
    return rc;
  }

  // Runs both handshakes; returns true when both completed.
  bool handshake() {
    int crc = client->handshake();
    for (int i = 0; i < 50 && !(client->handshake_done() && server->handshake_done()); ++i) {
      int src = deliver(*client, *server);
      if (src == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED) {
        // As the relay's cookie gate does: forget the attempt, keep no state.
        auto hvr = std::move(server->output());
        server->output().clear();
        REQUIRE(server->reset() == 0);
        REQUIRE(server->set_client_id(client_address) == 0);
        REQUIRE(server->enable_cid(server_cid) == 0);
        server->output() = std::move(hvr);
      } else if (src != MBEDTLS_ERR_SSL_WANT_READ && src != 0) {
        return false;
      }
      crc = deliver(*server, *client);
      if (crc != MBEDTLS_ERR_SSL_WANT_READ && crc != 0) return false;
      if (!client->handshake_done()) crc = client->handshake();
    }
    deliver(*client, *server);  // a last flight, if any
    return client->handshake_done() && server->handshake_done();
  }
};

}  // namespace

TEST_CASE("a ClientHello without cookie gets a HelloVerifyRequest no larger than itself") {
  dtls_pair p;
  REQUIRE(p.client->handshake() == MBEDTLS_ERR_SSL_WANT_READ);
  REQUIRE(p.client->output().size() == 1);
  const auto hello = p.client->output().front();
  CHECK(tls::classify_record(hello, tls::server_cid_length).kind == tls::record_kind::client_hello);
  p.server->feed(hello);
  CHECK(p.server->handshake() == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED);
  std::size_t reply = 0;
  for (const auto& d : p.server->output()) reply += d.size();
  CHECK(reply > 0);
  CHECK(reply <= hello.size());
}

TEST_CASE("the handshake completes with a connection ID, and records carry it at byte 11") {
  dtls_pair p;
  REQUIRE(p.handshake());
  CHECK(p.client->cid_in_use());
  CHECK(p.server->version() == "DTLSv1.2");
  CHECK(p.server->ciphersuite() == "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
  const unsigned char msg[] = "ping";
  REQUIRE(p.client->write({msg, 4}) == 4);
  REQUIRE(p.client->output().size() == 1);
  const auto record = p.client->output().front();
  const auto view = tls::classify_record(record, tls::server_cid_length);
  REQUIRE(view.kind == tls::record_kind::cid);
  CHECK(std::vector<unsigned char>(view.cid.begin(), view.cid.end()) == p.server_cid);
}

TEST_CASE("check_record accepts an authentic record once and leaves the session untouched") {
  dtls_pair p;
  REQUIRE(p.handshake());
  const unsigned char msg[] = "hello";
  REQUIRE(p.client->write({msg, 5}) == 5);
  const auto record = p.client->output().front();
  p.client->output().clear();

  CHECK(p.server->check_record(record) == 0);
  CHECK(p.server->check_record(record) == 0);  // a check changes nothing, not even replay state
  auto forged = record;
  forged.back() ^= 1;
  CHECK(p.server->check_record(forged) != 0);

  p.server->feed(record);
  unsigned char buf[64];
  REQUIRE(p.server->read({buf, sizeof buf}) == 5);
  CHECK(std::memcmp(buf, msg, 5) == 0);
  CHECK(p.server->check_record(record) != 0);  // now a replay
}

TEST_CASE("only a record newer than every one taken counts as newer: a late one does not") {
  dtls_pair p;
  REQUIRE(p.handshake());
  std::vector<std::vector<unsigned char>> records;
  const unsigned char msg[] = "x";
  for (int i = 0; i < 3; ++i) {
    REQUIRE(p.client->write({msg, 1}) == 1);
    records.push_back(p.client->output().front());
    p.client->output().clear();
  }
  unsigned char buf[16];
  p.server->feed(records[0]);
  REQUIRE(p.server->read({buf, sizeof buf}) == 1);
  p.server->feed(records[2]);
  REQUIRE(p.server->read({buf, sizeof buf}) == 1);
  CHECK(p.server->check_record(records[1]) == 0);     // authentic and never seen: reordered
  CHECK_FALSE(p.server->newer_than_seen(records[1]));  // but older than record 3
  REQUIRE(p.client->write({msg, 1}) == 1);
  CHECK(p.server->newer_than_seen(p.client->output().front()));
}

TEST_CASE("the record payload for the MTU is below the MTU, and larger writes fail") {
  dtls_pair p;
  REQUIRE(p.handshake());
  const std::size_t max = p.client->max_payload();
  CHECK(max > 1200);
  CHECK(max < mtu);
  std::vector<unsigned char> big(max + 1, 'x');
  CHECK(p.client->write(big) < 0);
  big.pop_back();
  CHECK(p.client->write(big) == static_cast<int>(max));
  CHECK(p.client->output().back().size() <= mtu);
}

TEST_CASE("a client refused by the allow-list fails the handshake") {
  tls::tls_options server_opts;
  server_opts.routes.front().allow.cn = {"someone-else"};
  dtls_pair p(server_opts);
  CHECK_FALSE(p.handshake());
  CHECK(p.server->refused_by_policy());
}

TEST_CASE("an empty datagram is ignored: it neither ends the session nor the handshake") {
  dtls_pair p;
  REQUIRE(p.client->handshake() == MBEDTLS_ERR_SSL_WANT_READ);
  p.client->feed({});  // anyone can send tunnel-in a 0-byte datagram from tunnel-out's address
  CHECK(p.client->handshake() == MBEDTLS_ERR_SSL_WANT_READ);

  dtls_pair q;
  REQUIRE(q.handshake());
  q.client->feed({});
  unsigned char buf[64];
  CHECK(q.client->read({buf, sizeof buf}) == MBEDTLS_ERR_SSL_WANT_READ);
  const unsigned char msg[] = "after";
  REQUIRE(q.server->write({msg, 5}) == 5);
  q.client->feed(q.server->output().front());
  CHECK(q.client->read({buf, sizeof buf}) == 5);
}
