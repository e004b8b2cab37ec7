#pragma once
// The services sharing one tunnel-out TCP port. They share one TLS configuration (the
// config loader made sure they agree on it) with one route per service: route i is
// services[i]. A raw client picks its service by SNI, a mux stream or flow by its service
// name; with a single service on the port every client lands on it.
// UDP services with --udp-over-tls join the port at their --tls-listen address: their
// flows arrive as mux datagram frames and are relayed to their UDP target.
#include <memory>
#include <optional>
#include <vector>

#include "config/service.hpp"
#include "flow_budget.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"

namespace tunnel::server {

// What a UDP route needs to relay flows over TLS beside its service's settings: the
// service's flow bound (its target is looked up for every flow, as the DTLS relay's).
struct udp_route {
  std::shared_ptr<flow_budget> budget;
};

struct port {
  std::vector<const config::service*> services;  // never empty; point into the settings
  // Per service: the TLS context source of its target leg (--target-tls), or null.
  std::vector<std::shared_ptr<tls::context_source>> target_tls;
  // Per service: its UDP relaying state for a UDP service, null for a TCP service.
  std::vector<std::shared_ptr<const udp_route>> udp;

  const config::service& first() const { return *services.front(); }
  const config::service& at(std::size_t route) const { return *services.at(route); }
  // The TCP address this port listens on (a TCP service's --listen, a UDP service's --tls-listen).
  const net::address& address() const;
  // The first service's TLS options with every service's route, for TLS over TCP.
  tls::tls_options tls() const;
  // The current target-leg context of route `route`, or null for a plain target.
  std::shared_ptr<const tls::tls_context> target_tls_for(std::size_t route) const {
    return route < target_tls.size() && target_tls[route] ? target_tls[route]->current() : nullptr;
  }
  // Route `route`'s UDP state, or null when it is a TCP service (or not set up yet).
  const udp_route* udp_for(std::size_t route) const { return route < udp.size() ? udp[route].get() : nullptr; }
  bool is_udp(std::size_t route) const { return at(route).udp.enabled; }
};

// The TLS ports of `all`: TCP services and UDP services with --udp-over-tls, one port per
// distinct TCP address, in the order of `all`. `all` must outlive the result.
std::vector<port> group_ports(const config::settings& all);

}  // namespace tunnel::server
