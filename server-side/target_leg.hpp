#pragma once
// tunnel-out's target leg: the connection to the target for one relayed legacy connection,
// dialled transparently from the client's address (--transparent), opened with a PROXY
// protocol header (--proxy-protocol) and spoken over TLS (--target-tls) when configured.
#include <asio/awaitable.hpp>
#include <optional>
#include <string>

#include "config/service.hpp"
#include "net/endpoint.hpp"
#include "net/plain_stream.hpp"
#include "net/pump.hpp"
#include "net/stream.hpp"
#include "proxy/ip_endpoint.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::server {

// Who the legacy client is, as far as tunnel-out knows.
struct client_addresses {
  std::optional<proxy::ip_endpoint> client;       // mux: the stream's origin; raw: the TLS peer.
                                                  // nullopt when not an IP (a Unix client).
  std::optional<proxy::ip_endpoint> accepted_on;  // our address the TLS connection came in on
};

// The client of a mux stream from its `origin` as tunnel-in wrote it in the stream open
// ("a.b.c.d:p", "[v6]:p", "unix:..."): nullopt for a non-IP one; `tunnel_in` (the TLS
// connection's peer) for a loopback or link-local one, which names another host here.
std::optional<proxy::ip_endpoint> client_from_origin(const std::string& origin,
                                                     const std::optional<proxy::ip_endpoint>& tunnel_in);
// Our address an accepted connection came in on (nullopt for a Unix socket).
std::optional<proxy::ip_endpoint> accepted_on(const net::generic_socket& accepted);
// The peer's and our address of an accepted connection.
client_addresses addresses_of(const net::accepted& conn);

struct target_connection {
  bool ok = false;
  std::string error;  // when !ok: one phrase for the "target unreachable" line
  net::generic_socket socket;
};

// Dials svc.target within --connect-timeout (from `from.client` with --transparent) and,
// with --proxy-protocol, writes the header before returning, so it precedes every byte of
// the client's. Never throws for network errors.
asio::awaitable<target_connection> open_target(const config::service& svc, const client_addresses& from);

// --target-tls: the TLS handshake with the target, bounded by --handshake-timeout. "" when
// it succeeded, else the reason (also logged). Never throws for network or TLS errors.
asio::awaitable<std::string> handshake_target(tls::tls_stream& target, const config::service& svc);

// pump_to_target's TLS branch: a coroutine of its own, so that the TLS stream and engine
// (1.5 KiB) take room only in the frames of connections that use them.
template <net::byte_stream S>
asio::awaitable<net::pump_result> pump_to_tls_target(S& from, const config::service& svc, net::generic_socket target,
                                                     std::shared_ptr<const tls::tls_context> target_tls) {
  tls::tls_stream secure(std::move(target), std::move(target_tls));
  net::pump_result result;
  result.reason = co_await handshake_target(secure, svc);
  if (result.reason.empty())
    result = co_await net::pump(from, secure, {svc.limits.idle, svc.limits.close, svc.limits.lifetime}, "client", "target");
  secure.close();
  co_return result;
}

// Relays `from` and the opened target connection until both directions end: over the plain
// socket, or — with `target_tls` (--target-tls) — over TLS once that handshake succeeded
// (otherwise the result says why, with nothing relayed).
template <net::byte_stream S>
asio::awaitable<net::pump_result> pump_to_target(S& from, const config::service& svc, net::generic_socket target,
                                                 std::shared_ptr<const tls::tls_context> target_tls) {
  if (target_tls) co_return co_await pump_to_tls_target(from, svc, std::move(target), std::move(target_tls));
  net::plain_stream plain(std::move(target));
  auto result = co_await net::pump(from, plain, {svc.limits.idle, svc.limits.close, svc.limits.lifetime}, "client", "target");
  plain.close();
  co_return result;
}

}  // namespace tunnel::server
