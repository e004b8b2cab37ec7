#pragma once
// tunnel-in's connection: a legacy plaintext client, carried to tunnel-out over TLS.
#include <asio/awaitable.hpp>
#include <memory>

#include "config/service.hpp"
#include "net/endpoint.hpp"
#include "tls/context.hpp"

namespace tunnel::client {

// Owns `socket` (an accepted legacy connection) until the connection ends. `legacy_tls`:
// the context for TLS from legacy clients (--listen-cert), or null for plain.
// Never throws for network or TLS errors; logs one line at the end.
asio::awaitable<void> relay_connection(const config::service& svc, std::shared_ptr<const tls::tls_context> context,
                                       std::shared_ptr<const tls::tls_context> legacy_tls, net::accepted conn);

}  // namespace tunnel::client
