#include "relay.hpp"

#include <asio/this_coro.hpp>

#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "net/timeout.hpp"
#include "ops/connection_log.hpp"
#include "ops/log.hpp"
#include "tls/handshake.hpp"
#include "tls/tls_stream.hpp"
#include "mux/frame.hpp"
#include "mux_server.hpp"
#include "target_leg.hpp"

namespace tunnel::server {

using namespace std::chrono_literals;

asio::awaitable<void> relay_connection(const config::service& svc,
                                       std::shared_ptr<const tls::tls_context> context,
                                       net::generic_socket socket, mux_host* mux) {
  // Cancelled only at the shutdown deadline: let every step see its operation aborted and
  // fall through to the one end-of-connection log line, instead of throwing (Asio 1.22).
  co_await asio::this_coro::throw_if_cancelled(false);
  ops::connection_record rec;
  std::error_code ignored;
  rec.peer = net::describe(socket.remote_endpoint(ignored));
  rec.target = svc.target.to_string();
  net::set_low_latency(socket);
  const client_addresses from = addresses_of(socket);  // raw mode: the client is the TLS peer
  tls::tls_stream secure(std::move(socket), std::move(context));

  const auto hs = co_await tls::run_handshake(secure, svc.limits.handshake);
  if (!hs.ok) {
    const auto& peer = secure.tls().peer();
    ops::event(hs.probe ? spdlog::level::debug : spdlog::level::warn,
               hs.probe ? "probe connection closed before handshake" : "handshake failed")
        .kv("peer", rec.peer)
        .kv("identity", peer ? peer->describe() : std::string("unknown"))
        .kv("reason", hs.reason);
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
  ops::log_authorized(rec, secure.tls().version(), secure.tls().ciphersuite());

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
  net::plain_stream plain(std::move(dialed.socket));
  const auto result = co_await net::pump(secure, plain, {svc.limits.idle, svc.limits.close}, "client", "target");
  secure.close();
  plain.close();
  ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
}

}  // namespace tunnel::server
