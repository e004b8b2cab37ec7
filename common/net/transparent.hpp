#pragma once
// Transparent dialling (tunnel-out --transparent): a connection to the target that leaves
// from the original client's address, which is not an address of this host. Linux only:
// IP_TRANSPARENT / IPV6_TRANSPARENT, which need CAP_NET_ADMIN (or CAP_NET_RAW).
#include <optional>
#include <string>
#include <system_error>

#include "net/endpoint.hpp"

namespace tunnel::net {

// Lets the open socket `s` of `family` (AF_INET or AF_INET6) bind to a non-local address,
// and leaves the choice of its port to connect() (IP_BIND_ADDRESS_NO_PORT), which picks
// one free for the 4-tuple.
// Returns the setsockopt error (EPERM without the capability).
std::error_code make_transparent(generic_socket& s, int family);

// Start-up check: nullopt when this process may set IP_TRANSPARENT, else a short reason.
// Opens and closes one socket; sends nothing.
std::optional<std::string> transparent_unavailable();

}  // namespace tunnel::net
