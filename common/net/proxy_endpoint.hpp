#pragma once
// Between socket endpoints and the PROXY protocol's address model.
#include <optional>

#include "net/endpoint.hpp"
#include "proxy/ip_endpoint.hpp"

namespace tunnel::net {

// The IP address and port of an AF_INET/AF_INET6 endpoint (IPv4-mapped IPv6 as IPv4);
// nullopt for Unix and anything else.
std::optional<proxy::ip_endpoint> to_ip_endpoint(const generic_endpoint& ep);

// The socket address for `e` (TCP).
generic_endpoint to_generic(const proxy::ip_endpoint& e);

}  // namespace tunnel::net
