#include "legacy_leg.hpp"

#include "ops/log.hpp"
#include "tls/handshake.hpp"

namespace tunnel::client {

asio::awaitable<bool> accept_legacy_tls(tls::tls_stream& legacy, const config::service& svc,
                                        const ops::connection_record& rec) {
  const std::string why = co_await tls::bridge_handshake(legacy, svc.limits.handshake, "handshake timeout");
  if (why.empty()) {
    ops::debug("legacy client TLS accepted")
        .kv("peer", rec.peer)
        .kv("tls", legacy.tls().version())
        .kv("alpn", legacy.tls().alpn().empty() ? std::string("(none)") : legacy.tls().alpn());
    co_return true;
  }
  ops::warn("legacy client TLS handshake failed").kv("peer", rec.peer).kv("service", svc.name).kv("reason", why);
  co_return false;
}

}  // namespace tunnel::client
