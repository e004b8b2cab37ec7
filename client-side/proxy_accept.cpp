#include "proxy_accept.hpp"

#include <algorithm>

#include "config/duration.hpp"
#include "net/proxy_read.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::client {

asio::awaitable<bool> accept_proxy_header(const config::service& svc, net::plain_stream& plain,
                                          ops::connection_record& rec) {
  using outcome = net::proxy_read_result::outcome;
  if (!svc.plain.accept_proxy) co_return true;
  if (!svc.plain.proxy_from.empty()) {
    // Whoever may send the header chooses the client's address: only the balancers may.
    const auto sender = proxy::parse_ip_endpoint(rec.peer);
    const auto& allowed = svc.plain.proxy_from;
    if (!sender || std::none_of(allowed.begin(), allowed.end(), [&](const auto& r) { return proxy::contains(r, *sender); })) {
      ops::warn("connection refused: not allowed to send a PROXY header").kv("peer", rec.peer)
          .kv("reason", "not in --accept-proxy-from");
      ops::metrics::get().count(ops::outcome::error);
      plain.close();
      co_return false;
    }
  }
  const auto r = co_await net::read_proxy_header(plain, svc.limits.handshake);
  if (r.result == outcome::probe) {
    ops::debug("probe connection closed before the PROXY header").kv("peer", rec.peer);
    ops::metrics::get().count(ops::outcome::probe);
    plain.close();
    co_return false;
  }
  if (r.result != outcome::ok) {
    const std::string reason = r.result == outcome::timeout
                                   ? "no complete PROXY header within " + config::format_duration(svc.limits.handshake) +
                                         " (--handshake-timeout)"
                                   : r.reason;
    ops::warn("connection refused: no valid PROXY header").kv("peer", rec.peer).kv("reason", reason);
    ops::metrics::get().count(ops::outcome::error);
    plain.close();
    co_return false;
  }
  const char* version = r.header.ver == proxy::version::v1 ? "v1" : "v2";
  rec.via = rec.peer;
  if (r.header.addr) rec.peer = r.header.addr->source.to_string();
  ops::debug("PROXY header accepted")
      .kv("peer", rec.peer)
      .kv("via", rec.via)
      .kv("version", version)
      .kv("client", r.header.addr ? "named" : "none (LOCAL/UNKNOWN): the connection's own address is used");
  co_return true;
}

}  // namespace tunnel::client
