#include "port.hpp"

namespace tunnel::server {

tls::tls_options port::tls() const {
  tls::tls_options options = first().tls;
  options.routes.clear();
  for (const auto* svc : services) options.routes.push_back(svc->tls.routes.front());
  return options;
}

std::vector<port> group_ports(const config::settings& all) {
  std::vector<port> ports;
  for (const auto& svc : all.services) {
    if (svc.udp.enabled) continue;
    auto it = std::find_if(ports.begin(), ports.end(),
                           [&](const port& p) { return p.first().listen.to_string() == svc.listen.to_string(); });
    if (it == ports.end()) ports.push_back(port{{&svc}});
    else it->services.push_back(&svc);
  }
  return ports;
}

}  // namespace tunnel::server
