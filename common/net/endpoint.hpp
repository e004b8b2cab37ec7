#pragma once
// Conversions between our address model and Asio's protocol-independent endpoints, so one
// socket type carries TCP and Unix streams alike on the plain legs.
#include <asio/generic/stream_protocol.hpp>
#include <asio/ip/tcp.hpp>
#include <string>

#include "net/address.hpp"

namespace tunnel::net {

using generic_endpoint = asio::generic::stream_protocol::endpoint;
using generic_socket = asio::generic::stream_protocol::socket;

// A connection just accepted, with the peer address accept() returned (asking the socket
// again would be one more system call per connection).
struct accepted {
  generic_socket socket;
  generic_endpoint peer;
};

generic_endpoint to_generic(const asio::ip::tcp::endpoint& ep);
generic_endpoint unix_endpoint(const std::string& path);

// "127.0.0.1:5000", "[::1]:5000", "unix:/run/x.sock" or "unix" for an unnamed peer.
std::string describe(const generic_endpoint& ep);

// Best-effort TCP_NODELAY on inet sockets: the tunnel forwards what it reads at once, so
// Nagle would only add latency to request/response protocols. Set on a listening socket, it
// is inherited by every connection accepted from it (Linux copies it at accept).
void set_low_latency(int native_socket);
inline void set_low_latency(generic_socket& s) { set_low_latency(s.native_handle()); }

}  // namespace tunnel::net
