#pragma once
// tunnel-out's side of UDP over TLS: a UDP flow that tunnel-in opened inside a mux
// connection (PROTOCOL.md, "Datagrams") is authorized like a stream — its service must be
// a UDP service on this port, and the connection's peer must be on that service's current
// allow-list — bounded by the service's --max-flows, and relayed from a UDP socket of its
// own to the service's target, until --flow-idle-timeout passes without a datagram, either
// side closes it, or the connection ends.
#include <asio/any_io_executor.hpp>
#include <memory>

#include "mux/flow.hpp"
#include "mux_connection.hpp"
#include "mux_server.hpp"

namespace tunnel::server {

// Called by the session (on its thread) for each new flow. Refuses it (FLOW_CLOSE, one
// warning) or sets up its relay before returning, so datagrams that follow in the same
// read reach the target; the relay then runs as a coroutine on `ex`. Never throws for
// network errors.
void accept_flow(mux_host& host, const std::shared_ptr<connection_info>& conn, const asio::any_io_executor& ex,
                 std::unique_ptr<mux::flow> f);

}  // namespace tunnel::server
