#include "mux_relay.hpp"

#include <asio/this_coro.hpp>

#include "legacy_leg.hpp"
#include "mux/stream.hpp"
#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "ops/connection_log.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::client {
namespace {

// The service name streams are opened for (tunnel-out serves one service per process).
// What a stream asks for when the service has no name: tunnel-out routes it to its only
// service on the port (and refuses it where the port has several).
constexpr std::string_view unnamed_service = "default";

// Ends a stream the way its pump ended: cleanly, or with a reset saying why.
void finish(mux::stream& st, const net::pump_result& result) {
  if (result.clean) st.close();
  else if (result.reason.find("timeout") != std::string::npos) st.reset(mux::reset_code::timeout, result.reason);
  else st.reset(mux::reset_code::cancel, result.reason);
}

}  // namespace

namespace {

// The mux relay over either kind of legacy stream (legacy_leg.hpp).
struct mux_relay {
  const config::service& svc;
  mux_pool& pool;
  std::shared_ptr<const tls::tls_context> context;

  template <class Legacy>
  asio::awaitable<void> operator()(Legacy& plain, ops::connection_record& rec) const;
};

template <class Legacy>
asio::awaitable<void> mux_relay::operator()(Legacy& plain, ops::connection_record& rec) const {
  auto got = co_await acquire_session(pool, svc, context);
  mux::session* session = got.session;
  if (!session) {
    if (!got.attempt.secure) {  // failing exactly like raw mode does
      log_attempt_failure(got.attempt, rec.peer, rec.target);
      if (got.attempt.unreachable) ops::metrics::get().count(ops::outcome::unreachable);
      plain.close();
      co_return;
    }
    if (svc.mux.mode == config::carry_mode::mux) {
      ops::warn("handshake with tunnel-out failed")
          .kv("peer", rec.peer)
          .kv("connect", rec.target)
          .kv("identity", identity_of(*got.attempt.secure))
          .kv("reason", "tunnel-out does not offer mux mode (ALPN tunnel-mux/1); use --mode auto or raw");
      got.attempt.secure->close();
      plain.close();
      co_return;
    }
    // auto mode against a raw-only peer (another TLS server): plain TLS as in raw mode.
    auto& secure = *got.attempt.secure;
    rec.identity = identity_of(secure);
    ops::log_authorized(rec, secure.tls().version(), secure.tls().ciphersuite());
    const auto result = co_await net::pump(plain, secure, {svc.limits.idle, svc.limits.close, svc.limits.lifetime}, "client", "tunnel");
    secure.close();
    plain.close();
    ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
    co_return;
  }
  const std::string_view service = svc.name.empty() ? unnamed_service : std::string_view(svc.name);
  std::unique_ptr<mux::stream> st = session ? session->open(service, rec.peer) : nullptr;
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
  const auto result = co_await net::pump(plain, *st, {svc.limits.idle, svc.limits.close, svc.limits.lifetime}, "client", "tunnel");
  finish(*st, result);
  plain.close();
  ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
}

}  // namespace

asio::awaitable<void> relay_mux(const config::service& svc, mux_pool& pool, std::shared_ptr<const tls::tls_context> context,
                                std::shared_ptr<const tls::tls_context> legacy_tls, net::accepted conn) {
  // Cancelled only at the shutdown deadline: fall through to the one log line (Asio 1.22).
  co_await asio::this_coro::throw_if_cancelled(false);
  const mux_relay relay{svc, pool, std::move(context)};
  co_await serve_legacy(svc, std::move(legacy_tls), conn, relay);
}

}  // namespace tunnel::client
