#pragma once
// tunnel-out's connection: TLS handshake and authorization first, only then the target.
#include <asio/awaitable.hpp>
#include <memory>

#include "net/endpoint.hpp"
#include "port.hpp"
#include "tls/context.hpp"

namespace tunnel::server {

class mux_host;

// Owns `socket` (an accepted TCP connection on port `p`, which must outlive the call)
// until the connection ends. Never throws for network or TLS errors; logs one line at the
// end. With `mux` (which must outlive the call), a client that negotiated ALPN
// tunnel-mux/1 is served in mux mode; every other client in raw mode, relayed to the
// target of the service its SNI chose (or the port's only service).
asio::awaitable<void> relay_connection(const port& p, std::shared_ptr<const tls::tls_context> context,
                                       net::accepted conn, mux_host* mux = nullptr);

}  // namespace tunnel::server
