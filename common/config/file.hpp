#pragma once
// --config FILE: many services in one TOML file. Its keys are the flags without "--", so a
// key means exactly what its flag means:
//
//   cert = "/etc/tunnel/out.crt"          # top level: defaults for every service, and the
//   threads = 2                           # process-wide keys (threads, log-*, status, ...)
//   [services.postgres]                   # one table per service; its name is the
//   listen = "0.0.0.0:8443"               # service name (SNI / mux) unless `service` says
//   target = "127.0.0.1:5432"             # otherwise
//   allow-cn = ["app-1", "app-2"]
#include <string>

#include "config/service.hpp"

namespace tunnel::config {

// Reads and validates the whole file. Every service is validated like its flags would be,
// then the services are checked against each other (one listener per address; services
// sharing a tunnel-out port agree on its TLS settings). Throws usage_error (config/flags.hpp)
// whose message names the file, the line and the key: "site.toml:12: services.pg.mtu: ...".
// Unknown keys, wrong types and process-wide keys inside a service are errors.
settings load_file(tls::role side, const std::string& path);

}  // namespace tunnel::config
