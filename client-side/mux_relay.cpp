#include "mux_relay.hpp"

#include <asio/this_coro.hpp>

#include "mux/stream.hpp"
#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "ops/connection_log.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "proxy_accept.hpp"

namespace tunnel::client {
namespace {

// The service name streams are opened for (tunnel-out serves one service per process).
constexpr std::string_view service_name = "default";

std::string identity_of(const tls::tls_stream& secure) {
  return secure.tls().peer() ? secure.tls().peer()->describe() : std::string("unknown");
}

// Ends a stream the way its pump ended: cleanly, or with a reset saying why.
void finish(mux::stream& st, const net::pump_result& result) {
  if (result.clean) st.close();
  else if (result.reason.find("timeout") != std::string::npos) st.reset(mux::reset_code::timeout, result.reason);
  else st.reset(mux::reset_code::cancel, result.reason);
}

}  // namespace

asio::awaitable<void> relay_mux(const config::service& svc, mux_pool& pool,
                                std::shared_ptr<const tls::tls_context> context, net::generic_socket socket) {
  // Cancelled only at the shutdown deadline: fall through to the one log line (Asio 1.22).
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto ex = co_await asio::this_coro::executor;
  ops::connection_record rec;
  std::error_code ignored;
  rec.peer = net::describe(socket.remote_endpoint(ignored));
  rec.target = svc.target.to_string();
  net::set_low_latency(socket);
  net::plain_stream plain(std::move(socket));
  const bool admitted = co_await accept_proxy_header(svc, plain, rec);  // --accept-proxy-protocol
  if (!admitted) co_return;

  mux::session* session = co_await pool.pick_or_wait(svc.limits.connect + svc.limits.handshake);
  if (!session) {
    // Nothing up on this worker (start-up, tunnel-out restarting): a connection of our own,
    // failing exactly like raw mode does.
    auto attempt = co_await connect_tunnel(svc, std::move(context));
    if (!attempt.secure) {
      if (attempt.unreachable) {
        ops::warn("tunnel-out unreachable").kv("peer", rec.peer).kv("connect", rec.target).kv("error", attempt.reason);
        ops::metrics::get().count(ops::outcome::unreachable);
      } else {
        ops::warn("handshake with tunnel-out failed")
            .kv("peer", rec.peer)
            .kv("connect", rec.target)
            .kv("identity", attempt.identity)
            .kv("reason", attempt.reason);
      }
      plain.close();
      co_return;
    }
    if (attempt.secure->tls().alpn() != mux::alpn_name) {
      if (svc.mux.mode == config::carry_mode::mux) {
        ops::warn("handshake with tunnel-out failed")
            .kv("peer", rec.peer)
            .kv("connect", rec.target)
            .kv("identity", identity_of(*attempt.secure))
            .kv("reason", "tunnel-out does not offer mux mode (ALPN tunnel-mux/1); use --mode auto or raw");
        attempt.secure->close();
        plain.close();
        co_return;
      }
      // auto mode against a raw-only peer (another TLS server): plain TLS as in raw mode.
      auto& secure = *attempt.secure;
      rec.identity = identity_of(secure);
      ops::log_authorized(rec, secure.tls().version(), secure.tls().ciphersuite());
      const auto result = co_await net::pump(plain, secure, {svc.limits.idle, svc.limits.close}, "client", "tunnel");
      secure.close();
      plain.close();
      ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
      co_return;
    }
    ops::info("mux connection up").kv("identity", identity_of(*attempt.secure)).kv("adopted", "true");
    session = pool.adopt(ex, std::move(attempt.secure));
    pool.start();  // auto mode: tunnel-out speaks mux, so keep connections ready from now on
  }
  std::unique_ptr<mux::stream> st = session ? session->open(service_name, rec.peer) : nullptr;
  if (!st) {
    ops::warn("tunnel-out unreachable").kv("peer", rec.peer).kv("connect", rec.target).kv("error", "no mux connection available");
    plain.close();
    co_return;
  }
  rec.identity = identity_of(session->tls());
  ops::log_authorized(rec, session->tls().tls().version(), session->tls().tls().ciphersuite());
  // The session may end while the stream runs; the stream then fails with the reason and
  // `session` must not be touched again.
  session = nullptr;
  const auto result = co_await net::pump(plain, *st, {svc.limits.idle, svc.limits.close}, "client", "tunnel");
  finish(*st, result);
  plain.close();
  ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
}

}  // namespace tunnel::client
