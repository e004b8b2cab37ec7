#pragma once
// tunnel-in's legacy leg: the accepted connection from a legacy client, plain or — when the
// service accepts TLS from legacy clients (--listen-cert, a TLS bridge) — TLS. The relays
// are written once over either stream type.
#include <asio/awaitable.hpp>
#include <memory>
#include <optional>

#include "config/service.hpp"
#include "net/endpoint.hpp"
#include "net/plain_stream.hpp"
#include "net/proxy_endpoint.hpp"
#include "ops/connection_log.hpp"
#include "proxy_accept.hpp"
#include "tls/context.hpp"
#include "tls/penalty.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::client {

// Runs the TLS handshake with a legacy client, bounded by the handshake timeout. Logs and
// returns false when it fails (the caller then just closes). Never throws.
asio::awaitable<bool> accept_legacy_tls(tls::tls_stream& legacy, const config::service& svc,
                                        const ops::connection_record& rec);

// Takes `conn.socket` (the caller keeps `conn`: one copy per connection) until the
// connection ends and runs `relay(stream, rec)` over it: over the plain socket without
// `legacy_tls`, else over TLS once that handshake succeeded. `relay`
// is an object whose templated call operator is a coroutine (not a capturing coroutine
// lambda: GCC 12 mishandles those) and must outlive the call; `rec` comes filled with
// peer, target and service. (Pass `relay` as a named object: GCC 12 destroys a class
// prvalue handed by value to a coroutine inside a co_await expression too early.)
// serve_legacy's TLS branch: a coroutine of its own, so that the TLS stream and engine
// take room only in the frames of connections that use them.
// A client whose failed handshakes cost too much CPU (a crafted chain for --listen-ca)
// is kept out for a while, as tunnel-out does (tls/penalty.hpp).
template <class Relay>
asio::awaitable<void> serve_legacy_tls(const config::service& svc, std::shared_ptr<const tls::tls_context> legacy_tls,
                                       net::generic_socket socket, std::optional<tls::penalty::source> source,
                                       const Relay& relay, ops::connection_record& rec) {
  if (tls::penalty::refused_at_accept(source, rec.peer)) {
    std::error_code ignored;
    socket.close(ignored);
    co_return;
  }
  tls::tls_stream legacy(std::move(socket), std::move(legacy_tls));
  if (source) legacy.watch_handshake_steps(tls::penalty::watch(*source, rec.peer));
  if (co_await accept_legacy_tls(legacy, svc, rec)) co_await relay(legacy, rec);
  legacy.close();
}

template <class Relay>
asio::awaitable<void> serve_legacy(const config::service& svc, std::shared_ptr<const tls::tls_context> legacy_tls,
                                   net::accepted& conn, const Relay& relay) {
  ops::connection_record rec;
  rec.peer = net::describe(conn.peer);
  net::generic_socket& socket = conn.socket;
  rec.target = svc.target.to_string();
  rec.service = svc.name;
  if (legacy_tls) {
    co_await serve_legacy_tls(svc, std::move(legacy_tls), std::move(socket),
                              tls::penalty::source_of(net::to_ip_endpoint(conn.peer)), relay, rec);
    co_return;
  }
  net::plain_stream plain(std::move(socket));
  if (co_await accept_proxy_header(svc, plain, rec)) co_await relay(plain, rec);  // --accept-proxy-protocol
}

}  // namespace tunnel::client
