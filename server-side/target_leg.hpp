#pragma once
// tunnel-out's plain leg: the connection to the target for one relayed legacy connection,
// dialled transparently from the client's address (--transparent) and opened with a PROXY
// protocol header (--proxy-protocol) when configured.
#include <asio/awaitable.hpp>
#include <optional>
#include <string>

#include "config/service.hpp"
#include "net/endpoint.hpp"
#include "proxy/ip_endpoint.hpp"

namespace tunnel::server {

// Who the legacy client is, as far as tunnel-out knows.
struct client_addresses {
  std::optional<proxy::ip_endpoint> client;       // mux: the stream's origin; raw: the TLS peer.
                                                  // nullopt when not an IP (a Unix client).
  std::optional<proxy::ip_endpoint> accepted_on;  // our address the TLS connection came in on
};

// `origin` as tunnel-in wrote it in a mux stream open ("a.b.c.d:p", "[v6]:p", "unix:...").
std::optional<proxy::ip_endpoint> client_from_origin(const std::string& origin);
// The remote and local addresses of an accepted socket.
client_addresses addresses_of(const net::generic_socket& accepted);

struct target_connection {
  bool ok = false;
  std::string error;  // when !ok: one phrase for the "target unreachable" line
  net::generic_socket socket;
};

// Dials svc.target within --connect-timeout (from `from.client` with --transparent) and,
// with --proxy-protocol, writes the header before returning, so it precedes every byte of
// the client's. Never throws for network errors.
asio::awaitable<target_connection> open_target(const config::service& svc, const client_addresses& from);

}  // namespace tunnel::server
