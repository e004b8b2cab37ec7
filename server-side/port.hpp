#pragma once
// The services sharing one tunnel-out TCP port. They share one TLS configuration (the
// config loader made sure they agree on it) with one route per service: route i is
// services[i]. A raw client picks its service by SNI, a mux stream by its service name;
// with a single service on the port every client lands on it.
#include <vector>

#include "config/service.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"

namespace tunnel::server {

struct port {
  std::vector<const config::service*> services;  // never empty; point into the settings
  // Per service: the TLS context source of its target leg (--target-tls), or null.
  std::vector<std::shared_ptr<tls::context_source>> target_tls;

  const config::service& first() const { return *services.front(); }
  const config::service& at(std::size_t route) const { return *services.at(route); }
  // The first service's TLS options with every service's route.
  tls::tls_options tls() const;
  // The current target-leg context of route `route`, or null for a plain target.
  std::shared_ptr<const tls::tls_context> target_tls_for(std::size_t route) const {
    return route < target_tls.size() && target_tls[route] ? target_tls[route]->current() : nullptr;
  }
};

// The TCP services of `all`, one port per distinct listen address, in the order of `all`.
// `all` must outlive the result.
std::vector<port> group_ports(const config::settings& all);

}  // namespace tunnel::server
