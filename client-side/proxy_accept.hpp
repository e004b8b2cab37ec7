#pragma once
// tunnel-in --accept-proxy-protocol: behind a load balancer, every legacy connection starts
// with a PROXY protocol header naming the real client.
#include <asio/awaitable.hpp>

#include "config/service.hpp"
#include "net/plain_stream.hpp"
#include "ops/connection_log.hpp"

namespace tunnel::client {

// Without --accept-proxy-protocol: true at once. With it, reads the header at the start of
// `plain` within --handshake-timeout. On success returns true: `rec.peer` becomes the
// client the header names (unless it names none: LOCAL / UNKNOWN) and `rec.via` the
// address that sent it; `plain` continues right after the header. Otherwise logs one line
// (refused, or a probe at debug level), closes `plain` and returns false. Never throws for
// network errors.
asio::awaitable<bool> accept_proxy_header(const config::service& svc, net::plain_stream& plain,
                                          ops::connection_record& rec);

}  // namespace tunnel::client
