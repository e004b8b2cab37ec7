#pragma once
// tunnel-in's legacy connection in mux or auto mode: carried as a stream over a pooled
// connection, or — when no pooled connection is up on this worker — over a connection of
// its own, which becomes a mux session (or stays raw TLS in auto mode against a peer that
// does not speak mux).
#include <asio/awaitable.hpp>
#include <memory>

#include "config/service.hpp"
#include "mux_pool.hpp"
#include "net/endpoint.hpp"
#include "tls/context.hpp"

namespace tunnel::client {

// Owns `socket` (an accepted legacy connection) until the connection ends. Never throws
// for network or TLS errors; logs "connection authorized" and "connection closed" like
// raw mode, or one warning when the tunnel cannot be had.
// `legacy_tls`: the context for TLS from legacy clients (--listen-cert), or null for plain.
asio::awaitable<void> relay_mux(const config::service& svc, mux_pool& pool, std::shared_ptr<const tls::tls_context> context,
                                std::shared_ptr<const tls::tls_context> legacy_tls, net::accepted conn);

}  // namespace tunnel::client
