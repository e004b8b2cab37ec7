#pragma once
// Errors a mux stream reports through the byte_stream interface, so the pump's log line
// says why a stream ended ("tunnel read: stream refused by tunnel-out", ...).
#include <system_error>

#include "mux/frame.hpp"

namespace tunnel::mux {

enum class errc {
  reset_by_peer = 1,   // RESET(cancel) from the peer
  refused,             // RESET(refused): authorization failed at stream open
  target_unreachable,  // RESET(unreachable)
  limit,               // RESET(limit)
  peer_timeout,        // RESET(timeout)
  protocol,            // the peer broke the protocol, or we had to refuse a frame
  peer_shutdown,       // RESET(shutdown) or the stream was past the peer's GOAWAY
  peer_internal,       // RESET(internal)
  connection_lost,     // the carrying connection ended
  keepalive_timeout,   // the carrying connection's peer stopped answering pings
  cut_at_shutdown,     // this process is stopping and cut the connection
  stream_closed,       // write after shutdown_send / close
};

const std::error_category& mux_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), mux_category()}; }
// The error a RESET frame with `code` becomes on the receiving side.
std::error_code error_for(reset_code code);
// Whether a stream's error is its whole connection's end (lost, timed out, broken, cut),
// rather than its own RESET.
bool ended_with_connection(const std::error_code& ec);

}  // namespace tunnel::mux

template <>
struct std::is_error_code_enum<tunnel::mux::errc> : std::true_type {};
