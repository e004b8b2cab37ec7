#pragma once
// The validated settings of the plain legs (issue 6): the PROXY protocol on either side,
// transparent dialling on tunnel-out, and access to tunnel-in's Unix listening socket.
#include <optional>
#include <vector>
#include <string>

#include "net/unix_access.hpp"
#include "proxy/header.hpp"

namespace tunnel::config {

struct plain_legs {
  std::optional<proxy::version> send_proxy;  // tunnel-out --proxy-protocol: header to the target
  bool accept_proxy = false;                 // tunnel-in --accept-proxy-protocol: header from every client
  std::vector<proxy::ip_prefix> proxy_from;  // tunnel-in --accept-proxy-from: who may send it (empty: anyone)
  bool transparent = false;                  // tunnel-out --transparent: dial from the client's address
  net::unix_socket_access listen_access;     // tunnel-in --socket-mode / --socket-owner
  std::string socket_owner;                  // --socket-owner as given, for --check-config
};

}  // namespace tunnel::config
