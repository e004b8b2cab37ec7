#include "relay.hpp"

#include <algorithm>
#include <asio/this_coro.hpp>
#include <optional>

#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "net/timeout.hpp"
#include "ops/connection_log.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "tls/handshake.hpp"
#include "tls/penalty.hpp"
#include "tls/tls_stream.hpp"
#include "mux/frame.hpp"
#include "mux_server.hpp"
#include "first_record.hpp"
#include "target_leg.hpp"

namespace tunnel::server {

using namespace std::chrono_literals;

asio::awaitable<void> relay_connection(const port& p, std::shared_ptr<const tls::tls_context> context,
                                       net::accepted conn, mux_host* mux) {
  // Cancelled only at the shutdown deadline: let every step see its operation aborted and
  // fall through to the one end-of-connection log line, instead of throwing (Asio 1.22).
  co_await asio::this_coro::throw_if_cancelled(false);
  ops::connection_record rec;
  rec.peer = net::describe(conn.peer);
  net::generic_socket& socket = conn.socket;
  const client_addresses from = addresses_of(conn);  // raw mode: the client is the TLS peer
  const auto source = tls::penalty::source_of(from.client);
  if (tls::penalty::refused_at_accept(source, rec.peer)) {
    std::error_code ignored;
    socket.close(ignored);
    co_return;
  }
  // The first record decides between mux and plain TLS; it counts against the handshake time.
  const auto limit = p.first().limits.handshake;
  const auto started = std::chrono::steady_clock::now();
  first_record first;
  co_await read_first_record(socket, first, limit);
  tls::tls_stream secure(std::move(socket), std::move(context), first.offer == tls::alpn_offer::excludes);
  if (source) secure.watch_handshake_steps(tls::penalty::watch(*source, rec.peer));
  secure.preload(first.read(), first.ended);
  first.bytes.reset();  // the engine holds the bytes now
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  const auto hs = co_await tls::run_handshake(secure, std::max(limit - spent, std::chrono::milliseconds(1)));
  if (!hs.ok) {
    {
      const auto& peer = secure.tls().peer();
      auto line = ops::event(hs.probe ? spdlog::level::debug : spdlog::level::warn,
                             hs.probe ? "probe connection closed before handshake" : "handshake failed");
      line.kv("peer", rec.peer).kv("identity", peer ? peer->describe() : std::string("unknown"));
      // An identity from a chain that did not verify is only what the client wrote (and one
      // that did is the CA's word on the certificate, not proof the client holds its key).
      if (peer) line.kv("chain_verified", secure.tls().chain_verified());
      line.kv("reason", hs.reason);
    }  // logged here
    secure.close();
    co_return;
  }
  // Authenticated and authorized (the allow-list ran inside the handshake): only now is
  // the legacy server contacted.
  rec.identity = secure.tls().peer() ? secure.tls().peer()->describe() : std::string("unknown");
  if (mux && secure.tls().alpn() == mux::alpn_name) {
    co_await serve_mux(*mux, secure, rec);
    secure.close();
    co_return;
  }
  const auto route = secure.tls().route();
  if (!route) {  // PSK mode (no certificate to refuse in the handshake) on a shared port
    ops::warn("connection refused").kv("peer", rec.peer).kv("identity", rec.identity)
        .kv("reason", "no service named: this port serves several, the client must send one as SNI");
    ops::metrics::get().count(ops::handshake_failure::policy);
    secure.close();
    co_return;
  }
  if (p.is_udp(*route)) {  // its flows travel as mux datagram frames only
    ops::warn("connection refused").kv("peer", rec.peer).kv("identity", rec.identity)
        .kv("reason", "service " + p.at(*route).name + " carries UDP: only tunnel-in --udp (over TLS) can use it");
    ops::metrics::get().count(ops::handshake_failure::policy);
    secure.close();
    co_return;
  }
  const config::service& svc = p.at(*route);
  rec.service = svc.name;
  rec.target = svc.target.to_string();
  ops::log_authorized(rec, secure.tls().version(), secure.tls().ciphersuite(), secure.tls().resumed());

  auto dialed = co_await open_target(svc, from);
  if (!dialed.ok) {
    ops::warn("target unreachable")
        .kv("peer", rec.peer)
        .kv("identity", rec.identity)
        .kv("target", rec.target)
        .kv("error", dialed.error);
    // Tell the client cleanly that nothing more comes, without waiting on it for long.
    co_await net::with_timeout(secure.shutdown_send(), 1s);
    secure.close();
    ops::log_closed(rec, 0, 0, "target unreachable", false);
    co_return;
  }
  const auto result = co_await pump_to_target(secure, svc, std::move(dialed.socket), p.target_tls_for(*route));
  secure.close();
  ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
}

}  // namespace tunnel::server
