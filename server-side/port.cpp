#include "port.hpp"

#include <algorithm>

namespace tunnel::server {
namespace {

// The TCP address a tunnel-out service is reached on, if any.
const net::address* tls_address(const config::service& svc) {
  if (!svc.udp.enabled) return &svc.listen;
  return svc.udp.over_tls && svc.udp.tls_listen ? &*svc.udp.tls_listen : nullptr;
}

}  // namespace

const net::address& port::address() const { return *tls_address(first()); }

tls::tls_options port::tls() const {
  tls::tls_options options = first().tls;
  options.routes.clear();
  for (const auto* svc : services) options.routes.push_back(svc->tls.routes.front());
  // A UDP service may come first: the port is TLS over TCP all the same, and flows need mux.
  options.carrier = tls::transport::stream;
  options.mux_alpn = true;
  return options;
}

std::vector<port> group_ports(const config::settings& all) {
  std::vector<port> ports;
  for (const auto& svc : all.services) {
    const net::address* at = tls_address(svc);
    if (!at) continue;
    auto it = std::find_if(ports.begin(), ports.end(),
                           [&](const port& p) { return p.address().to_string() == at->to_string(); });
    if (it == ports.end()) ports.push_back(port{{&svc}});
    else it->services.push_back(&svc);
  }
  return ports;
}

}  // namespace tunnel::server
