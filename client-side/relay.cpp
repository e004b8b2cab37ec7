#include "relay.hpp"

#include <asio/this_coro.hpp>

#include "legacy_leg.hpp"
#include "net/dial.hpp"
#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "ops/connection_log.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "tls/handshake.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::client {

namespace {

// The raw relay over either kind of legacy stream (legacy_leg.hpp).
struct raw_relay {
  const config::service& svc;
  std::shared_ptr<const tls::tls_context> context;

  template <class Legacy>
  asio::awaitable<void> operator()(Legacy& legacy, ops::connection_record& rec) const {
    auto dialed = co_await net::dial(svc.target, svc.limits.connect);
    if (dialed.ec) {
      ops::warn("tunnel-out unreachable")
          .kv("peer", rec.peer)
          .kv("connect", rec.target)
          .kv("error", dialed.reason());
      legacy.close();
      ops::metrics::get().count(ops::outcome::unreachable);
      co_return;
    }
    tls::tls_stream secure(std::move(dialed.socket), context);
    const auto hs = co_await tls::run_handshake(secure, svc.limits.handshake);
    if (!hs.ok) {
      const auto& server = secure.tls().peer();
      ops::warn("handshake with tunnel-out failed")
          .kv("peer", rec.peer)
          .kv("connect", rec.target)
          .kv("identity", server ? server->describe() : std::string("unknown"))
          .kv("reason", hs.reason);
      secure.close();
      legacy.close();
      co_return;
    }
    rec.identity = secure.tls().peer() ? secure.tls().peer()->describe() : std::string("unknown");
    ops::log_authorized(rec, secure.tls().version(), secure.tls().ciphersuite(), secure.tls().resumed());
    // With TLS 1.3 a refusal of our certificate arrives as an alert on the first read; the
    // pump then ends with that reason and the legacy client sees its connection close.
    const auto result = co_await net::pump(legacy, secure, {svc.limits.idle, svc.limits.close, svc.limits.lifetime}, "client", "tunnel");
    secure.close();
    legacy.close();
    ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
  }
};

}  // namespace

asio::awaitable<void> relay_connection(const config::service& svc, std::shared_ptr<const tls::tls_context> context,
                                       std::shared_ptr<const tls::tls_context> legacy_tls, net::accepted conn) {
  // Cancelled only at the shutdown deadline: let every step see its operation aborted and
  // fall through to the one end-of-connection log line, instead of throwing (Asio 1.22).
  co_await asio::this_coro::throw_if_cancelled(false);
  const raw_relay relay{svc, std::move(context)};
  co_await serve_legacy(svc, std::move(legacy_tls), conn, relay);
}

}  // namespace tunnel::client
