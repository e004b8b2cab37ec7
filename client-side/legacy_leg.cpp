#include "legacy_leg.hpp"

#include "net/timeout.hpp"
#include "ops/log.hpp"

namespace tunnel::client {

asio::awaitable<bool> accept_legacy_tls(tls::tls_stream& legacy, const config::service& svc,
                                        const ops::connection_record& rec) {
  // Not tls::run_handshake: that one counts tunnel handshakes in the metrics.
  const auto result = co_await net::with_timeout(legacy.handshake(), svc.limits.handshake);
  const bool overtaken = result && !*result && legacy.tls().overtaken_by_reload();
  if (result && !*result && !overtaken) {
    ops::debug("legacy client TLS accepted")
        .kv("peer", rec.peer)
        .kv("tls", legacy.tls().version())
        .kv("alpn", legacy.tls().alpn().empty() ? std::string("(none)") : legacy.tls().alpn());
    co_return true;
  }
  const std::string verify = legacy.tls().verify_failure();
  ops::warn("legacy client TLS handshake failed")
      .kv("peer", rec.peer)
      .kv("service", svc.name)
      .kv("reason", !result      ? std::string("handshake timeout")
                    : overtaken  ? std::string(tls::tls_context::overtaken_refusal)
                    : !verify.empty() ? verify
                                      : result->message());
  co_return false;
}

}  // namespace tunnel::client
