#pragma once
// Listening sockets for the plain (tunnel-in) or secure (tunnel-out) front leg.
#include <asio/basic_socket_acceptor.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/io_context.hpp>
#include <string>

#include "net/address.hpp"
#include "net/unix_access.hpp"

namespace tunnel::net {

using generic_acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;

// Binds and listens on `at`, resolving a host name synchronously (start-up only) and taking
// its first address. A Unix path left over by a previous run is replaced only if it is a
// socket nobody listens on any more (a live one, or any other file, is an error). For a
// Unix path, `access` applies to the file: the mode as bind() creates it, the owner
// (lchown, never through a symlink) before listen, so no client can connect before either
// is in place. Throws std::runtime_error with a one-line reason.
generic_acceptor listen_on(asio::io_context& io, const address& at, const unix_socket_access& access = {});

// The bound address as text (shows the port the kernel chose for port 0).
std::string bound_address(const generic_acceptor& acceptor);

}  // namespace tunnel::net
