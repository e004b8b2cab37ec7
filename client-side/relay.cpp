#include "relay.hpp"

#include <asio/this_coro.hpp>

#include "net/dial.hpp"
#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "ops/connection_log.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "proxy_accept.hpp"
#include "tls/handshake.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::client {

asio::awaitable<void> relay_connection(const config::service& svc,
                                       std::shared_ptr<const tls::tls_context> context,
                                       net::generic_socket socket) {
  // Cancelled only at the shutdown deadline: let every step see its operation aborted and
  // fall through to the one end-of-connection log line, instead of throwing (Asio 1.22).
  co_await asio::this_coro::throw_if_cancelled(false);
  ops::connection_record rec;
  std::error_code ignored;
  rec.peer = net::describe(socket.remote_endpoint(ignored));
  rec.target = svc.target.to_string();
  net::set_low_latency(socket);
  net::plain_stream plain(std::move(socket));
  const bool admitted = co_await accept_proxy_header(svc, plain, rec);  // --accept-proxy-protocol
  if (!admitted) co_return;

  auto dialed = co_await net::dial(svc.target, svc.limits.connect);
  if (dialed.ec) {
    ops::warn("tunnel-out unreachable")
        .kv("peer", rec.peer)
        .kv("connect", rec.target)
        .kv("error", dialed.ec == asio::error::timed_out ? "connect timeout" : dialed.ec.message());
    plain.close();
    ops::metrics::get().count(ops::outcome::unreachable);
    co_return;
  }
  tls::tls_stream secure(std::move(dialed.socket), std::move(context));
  const auto hs = co_await tls::run_handshake(secure, svc.limits.handshake);
  if (!hs.ok) {
    const auto& server = secure.tls().peer();
    ops::warn("handshake with tunnel-out failed")
        .kv("peer", rec.peer)
        .kv("connect", rec.target)
        .kv("identity", server ? server->describe() : std::string("unknown"))
        .kv("reason", hs.reason);
    secure.close();
    plain.close();
    co_return;
  }
  rec.identity = secure.tls().peer() ? secure.tls().peer()->describe() : std::string("unknown");
  ops::log_authorized(rec, secure.tls().version(), secure.tls().ciphersuite());
  // With TLS 1.3 a refusal of our certificate arrives as an alert on the first read; the
  // pump then ends with that reason and the legacy client sees its connection close.
  const auto result = co_await net::pump(plain, secure, {svc.limits.idle, svc.limits.close}, "client", "tunnel");
  secure.close();
  plain.close();
  ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
}

}  // namespace tunnel::client
