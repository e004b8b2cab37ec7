#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "engine_pair.hpp"
#include "tls/resumption.hpp"
#include "tls/ticket.hpp"
#include "tls/ticket_keys.hpp"

using namespace tunnel;
using namespace tunnel::unit;

namespace {

tls::tls_options resuming(tls::tls_options o = {}) {
  o.resumption = std::chrono::minutes(10);
  return o;
}

// A connection that must run a full handshake. With resumption on both sides it leaves a
// ticket in the client context's cache: the ticket travels after the handshake, so the
// client has to read something.
void full_connection(const std::shared_ptr<tls::tls_context>& client_ctx,
                     const std::shared_ptr<tls::tls_context>& server_ctx) {
  tls::engine client(client_ctx), server(server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  REQUIRE((crc == 0 && src == 0));
  CHECK_FALSE(client.resumed());
  CHECK_FALSE(server.resumed());
  REQUIRE(server.peer());
  CHECK(server.peer()->cn == "client-a");
  exchange_both_ways(client, server, 1 << 20);
}

void first_connection(pair_fixture& f) { full_connection(f.client_ctx, f.server_ctx); }

}  // namespace

TEST_CASE("a second connection resumes, keeps both identities and carries data") {
  pair_fixture f(resuming(), resuming());
  first_connection(f);
  for (std::size_t chunk : {std::size_t{1} << 20, std::size_t{7}}) {
    tls::engine client(f.client_ctx), server(f.server_ctx);
    auto [crc, src] = handshake(client, server, chunk);
    REQUIRE((crc == 0 && src == 0));
    CHECK(client.resumed());
    CHECK(server.resumed());
    REQUIRE(server.peer());
    CHECK(server.peer()->cn == "client-a");
    CHECK(server.peer()->uri == std::vector<std::string>{"spiffe://unit/client-a"});
    REQUIRE(client.peer());
    CHECK(client.peer()->cn == "tunnel-out");
    exchange_both_ways(client, server, chunk);
  }
}

TEST_CASE("a ticket arriving with data: one read returns the data (nothing left waiting in the engine)") {
  pair_fixture f(resuming(), resuming());
  for (int round = 0; round < 2; ++round) {  // a full handshake, then a resumed one
    tls::engine client(f.client_ctx), server(f.server_ctx);
    int crc = MBEDTLS_ERR_SSL_WANT_READ, src = MBEDTLS_ERR_SSL_WANT_READ;
    for (int i = 0; i < 20 && (crc != 0 || src != 0); ++i) {  // hold back the server's last flight
      if (crc) crc = client.handshake();
      transfer(client, server, 1 << 20);
      if (src) src = server.handshake();
      if (src) transfer(server, client, 1 << 20);
    }
    REQUIRE((crc == 0 && src == 0));
    CHECK(client.resumed() == (round == 1));
    const std::string reply = "+PONG\r\n";
    REQUIRE(server.write(bytes(reply)) == static_cast<int>(reply.size()));
    transfer(server, client, 1 << 20);  // the ticket and the reply, in one piece
    std::byte buf[64];
    const int rc = client.read(buf);
    REQUIRE(rc == static_cast<int>(reply.size()));
    CHECK(std::string(reinterpret_cast<const char*>(buf), reply.size()) == reply);
  }
}

TEST_CASE("a new server context (a credential reload) runs a full handshake for an old ticket") {
  pair_fixture f(resuming(), resuming());
  first_connection(f);
  auto reloaded = std::make_shared<tls::tls_context>(f.server_ctx->options(), tls::credentials::load(f.server_files));
  full_connection(f.client_ctx, reloaded);
}

TEST_CASE("resumption off on either side: every handshake is a full one") {
  for (bool server_on : {false, true}) {
    pair_fixture f(server_on ? resuming() : tls::tls_options{}, server_on ? tls::tls_options{} : resuming());
    first_connection(f);
    first_connection(f);
  }
}

TEST_CASE("resumption ends a window after the full handshake, however often it was resumed") {
  // Each resumed connection gets a new ticket; the window still counts from the handshake
  // that verified the certificates, so a client reconnecting often cannot skip them forever.
  using clock = std::chrono::steady_clock;
  tls::tls_options server_opts = resuming();
  server_opts.resumption = std::chrono::seconds(2);
  pair_fixture f(server_opts, resuming());
  first_connection(f);
  const auto verified_by = clock::now();  // the full handshake's verification was before this
  auto attempt = [&](clock::time_point at) {
    std::this_thread::sleep_until(at);
    tls::engine client(f.client_ctx), server(f.server_ctx);
    auto [crc, src] = handshake(client, server, 1 << 20);
    REQUIRE((crc == 0 && src == 0));
    exchange_both_ways(client, server, 1 << 20);  // the connection's new ticket arrives
    CHECK(client.resumed() == server.resumed());
    return server.resumed();
  };
  const auto resumed_at = clock::now() + std::chrono::milliseconds(900);
  CHECK(attempt(resumed_at));
  // Past the window since the full handshake, though within one of the resumption's ticket.
  const auto late = verified_by + std::chrono::milliseconds(2100);
  REQUIRE(late < resumed_at + std::chrono::seconds(2));
  CHECK_FALSE(attempt(late));
}

TEST_CASE("a ticket from a mux connection does not open a service that refuses its peer") {
  // client-a may use service "b" only. A mux connection admits it (some service does), and
  // its ticket must not let a raw connection for service "a" in by resumption.
  tls::tls_options server_opts = resuming();
  server_opts.mux_alpn = true;
  server_opts.routes = {{"a", {}}, {"b", {}}};
  server_opts.routes[0].allow.cn = {"client-b"};
  server_opts.routes[1].allow.cn = {"client-a"};
  tls::tls_options mux_opts = resuming();
  mux_opts.mux_alpn = true;
  mux_opts.sni = "a";
  pair_fixture f(server_opts, mux_opts);
  first_connection(f);
  tls::tls_options raw_opts = resuming();
  raw_opts.side = tls::role::client;
  raw_opts.sni = "a";
  raw_opts.server_name = "tunnel-out.test";
  auto raw_ctx = std::make_shared<tls::tls_context>(raw_opts, tls::credentials::load(f.client_files));
  raw_ctx->sessions()->copy_from(*f.client_ctx->sessions());
  // The ticket is not taken: a full handshake runs, and refuses the certificate as always
  // (no resumption, so no new ticket for a peer the service refuses).
  tls::engine client(raw_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  CHECK(src != 0);
  CHECK_FALSE(server.resumed());
  CHECK(server.refused_by_policy());
  CHECK(server.verify_failure() == "peer certificate not on the allow-list of service a");
  // A ticket from a connection to the service that admits the peer resumes there.
  raw_opts.sni = "b";
  auto b_ctx = std::make_shared<tls::tls_context>(raw_opts, tls::credentials::load(f.client_files));
  full_connection(b_ctx, f.server_ctx);
  tls::engine b_client(b_ctx), b_server(f.server_ctx);
  auto [bcrc, bsrc] = handshake(b_client, b_server, 1 << 20);
  REQUIRE((bcrc == 0 && bsrc == 0));
  CHECK(b_server.resumed());
}

TEST_CASE("tunnel-in offers each ticket once; four after a full handshake, one after a resumed one") {
  pair_fixture f(resuming(), resuming());
  auto& cache = *f.client_ctx->sessions();
  first_connection(f);
  CHECK(cache.size() == 4);
  {
    tls::engine client(f.client_ctx), server(f.server_ctx);
    auto [crc, src] = handshake(client, server, 1 << 20);
    REQUIRE((crc == 0 && src == 0));
    CHECK(client.resumed());
    CHECK(cache.size() == 3);  // the ticket it showed is gone: no other connection shows it
    exchange_both_ways(client, server, 1 << 20);
    CHECK(cache.size() == 4);
  }
  // A reloaded server takes none of them: each connection spends one, runs a full handshake
  // and brings four; the cache keeps the newest up to its capacity.
  std::shared_ptr<tls::tls_context> reloaded;
  for (int i = 0; i < 5; ++i) {
    reloaded = std::make_shared<tls::tls_context>(f.server_ctx->options(), tls::credentials::load(f.server_files));
    full_connection(f.client_ctx, reloaded);
  }
  REQUIRE(cache.size() == tls::session_cache::capacity);
  // Spent with none arriving (nothing read): the newest four, the last server's, resume; the
  // others are refused by it; then nothing is left to offer.
  for (std::size_t i = 0; i < tls::session_cache::capacity; ++i) {
    tls::engine client(f.client_ctx), server(reloaded);
    auto [crc, src] = handshake(client, server, 1 << 20);
    REQUIRE((crc == 0 && src == 0));
    CHECK(client.resumed() == (i < 4));
  }
  CHECK(cache.size() == 0);
}

TEST_CASE("a ticket sealed just before the key is replaced still resumes after it") {
  // Window (and key period) 2 s. The first key is made with the server context, before `made`.
  tls::tls_options server_opts = resuming();
  server_opts.resumption = std::chrono::seconds(2);
  pair_fixture f(server_opts, resuming());
  const auto made = std::chrono::steady_clock::now();
  std::this_thread::sleep_until(made + std::chrono::milliseconds(1000));
  first_connection(f);  // its tickets: sealed with the first key, good for 2 s more
  // Past the first key's period: another client's full handshake gets tickets under a new key.
  std::this_thread::sleep_until(made + std::chrono::milliseconds(2100));
  auto other = std::make_shared<tls::tls_context>(f.client_ctx->options(), tls::credentials::load(f.client_files));
  full_connection(other, f.server_ctx);
  // The first client's ticket opens with the key before.
  tls::engine client(f.client_ctx), server(f.server_ctx);
  auto [crc, src] = handshake(client, server, 1 << 20);
  REQUIRE((crc == 0 && src == 0));
  CHECK(client.resumed());
  CHECK(server.resumed());
}

TEST_CASE("ticket keys: a new one every period, the one before opens for one more") {
  constexpr std::int64_t period = 1000;
  tls::ticket_keys keys(period, 5000);
  std::array<tls::ticket_key, 2> open{};
  const auto first = keys.sealing(5000);
  REQUIRE(first);
  CHECK(keys.sealing(5999) == first);
  REQUIRE(keys.opening(5999, open) == 1);
  CHECK(open[0] == *first);
  const auto second = keys.sealing(6000);  // a period old: replaced
  REQUIRE(second);
  CHECK(second != first);
  REQUIRE(keys.opening(6000, open) == 2);
  CHECK(open[0] == *second);
  CHECK(open[1] == *first);
  REQUIRE(keys.opening(6999, open) == 2);
  CHECK(keys.opening(7000, open) == 1);  // two periods old: erased, even with no ticket sealed since
  CHECK(open[0] == *second);
  CHECK(keys.opening(7000, open) == 1);
  // Idle for long: the next ticket gets a fresh key, and nothing older opens.
  const auto third = keys.sealing(20000);
  REQUIRE(third);
  CHECK(third != second);
  REQUIRE(keys.opening(20000, open) == 1);
  CHECK(open[0] == *third);
}

TEST_CASE("ticket keys: forget_expired erases what is two periods old without a ticket sealed or opened") {
  constexpr std::int64_t period = 1000;
  tls::ticket_keys keys(period, 5000);
  REQUIRE(keys.sealing(6000));  // the first key now opens only
  CHECK(keys.forget_expired(6999) == 0);
  CHECK(keys.forget_expired(7000) == 1);  // the first key
  CHECK(keys.forget_expired(7000) == 0);
  CHECK(keys.forget_expired(8000) == 1);  // the second
  std::array<tls::ticket_key, 2> open{};
  CHECK(keys.opening(8000, open) == 0);
  CHECK(keys.sealing(8000));  // a fresh one when a ticket is due again
}

TEST_CASE("an idle context erases its expired resumption secrets when asked, not only at a handshake") {
  tls::tls_options server_opts = resuming(), client_opts = resuming();
  server_opts.resumption = client_opts.resumption = std::chrono::seconds(1);
  pair_fixture f(server_opts, client_opts);
  first_connection(f);
  REQUIRE(f.client_ctx->sessions()->size() == 4);
  CHECK(f.client_ctx->forget_expired() == 0);
  CHECK(f.server_ctx->forget_expired() == 0);
  // The server's key, made with its context, is two periods old; the sessions are past their window.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  CHECK(f.client_ctx->forget_expired() == 4);
  CHECK(f.client_ctx->sessions()->size() == 0);
  CHECK(f.server_ctx->forget_expired() == 1);
  CHECK(f.server_ctx->forget_expired() == 0);
}

TEST_CASE("a context a reload replaced erases its resumption secrets and takes no new ones") {
  pair_fixture f(resuming(), resuming());
  first_connection(f);
  auto& cache = *f.client_ctx->sessions();
  REQUIRE(cache.size() == 4);
  f.client_ctx->retire([] { return std::shared_ptr<const tls::tls_context>(); });
  CHECK(cache.size() == 0);
  // Connections that still use the old contexts: full handshakes, and nothing is kept after.
  full_connection(f.client_ctx, f.server_ctx);
  CHECK(cache.size() == 0);
  auto fresh_client = std::make_shared<tls::tls_context>(f.client_ctx->options(), tls::credentials::load(f.client_files));
  full_connection(fresh_client, f.server_ctx);
  REQUIRE(fresh_client->sessions()->size() == 4);
  f.server_ctx->retire([] { return std::shared_ptr<const tls::tls_context>(); });  // no key opens the tickets it sealed, none seals new ones
  full_connection(fresh_client, f.server_ctx);
  CHECK(fresh_client->sessions()->size() == 3);  // one spent on the refused resumption, none new
}

TEST_CASE("ticket keys: retired, nothing opens and nothing seals") {
  tls::ticket_keys keys(1000, 5000);
  REQUIRE(keys.sealing(5000));
  keys.retire();
  std::array<tls::ticket_key, 2> open{};
  CHECK(keys.opening(5000, open) == 0);
  CHECK_FALSE(keys.sealing(5000));
  CHECK_FALSE(keys.sealing(9000));  // not even once a new key would be due
}

TEST_CASE("tickets: what is sealed opens with the same key only, and any change is refused") {
  tls::ticket_key key{}, other{};
  key[0] = 1;
  other[0] = 2;
  tls::ticket_contents c;
  c.authenticated_ms = 123456789;
  c.not_after = 2000000000;
  c.peer.cn = "client-a";
  c.peer.dns = {"a.test", "b.test"};
  c.peer.uri = {"spiffe://unit/client-a"};
  c.peer.ip = {"127.0.0.1"};
  c.peer.spki[5] = 9;
  c.session = {1, 2, 3, 4, 5};
  std::vector<unsigned char> buf(1024);
  const std::size_t n = tls::seal_ticket(key, c, buf);
  REQUIRE(n > c.session.size());
  buf.resize(n);
  CHECK(tls::seal_ticket(key, c, std::span(buf).first(n - 1)) == 0);
  auto opened = tls::open_ticket(key, buf);
  REQUIRE(opened);
  CHECK(opened->authenticated_ms == c.authenticated_ms);
  CHECK(opened->not_after == c.not_after);
  CHECK(opened->peer.cn == "client-a");
  CHECK(opened->peer.dns == c.peer.dns);
  CHECK(opened->peer.uri == c.peer.uri);
  CHECK(opened->peer.ip == c.peer.ip);
  CHECK(opened->peer.spki == c.peer.spki);
  CHECK(opened->session == c.session);
  CHECK_FALSE(tls::open_ticket(other, buf));
  for (std::size_t i = 0; i < buf.size(); ++i) {
    auto altered = buf;
    altered[i] ^= 0x40;
    CHECK_FALSE(tls::open_ticket(key, altered));
  }
  for (std::size_t n = 0; n < buf.size(); ++n) CHECK_FALSE(tls::open_ticket(key, std::span(buf).first(n)));
}

TEST_CASE("connections on several threads share the contexts' tickets and cache safely") {
  // The contexts are shared by every worker thread; TSan runs this in CI.
  pair_fixture f(resuming(), resuming());
  first_connection(f);  // four tickets: one for each thread's first connection
  std::atomic<int> ok{0}, resumed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        tls::engine client(f.client_ctx), server(f.server_ctx);
        auto [crc, src] = handshake(client, server, 1 << 20);
        if (crc != 0 || src != 0) continue;
        std::byte buf[64];
        const std::string reply = "pong";
        if (server.write(bytes(reply)) != 4) continue;
        transfer(server, client, 1 << 20);  // the ticket and the reply: the cache is written
        if (client.read(buf) != 4) continue;
        ++ok;
        if (server.resumed() && client.resumed()) ++resumed;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 20);
  CHECK(resumed == 20);
}
