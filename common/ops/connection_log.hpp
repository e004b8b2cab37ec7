#pragma once
// The two log lines of every relayed connection: when it is authorized and when it ends.
// Byte counts are named from the legacy client's point of view on both binaries:
// bytes_up = legacy client -> legacy server, bytes_down = legacy server -> legacy client.
#include <chrono>
#include <string>

#include "net/pump.hpp"

namespace tunnel::ops {

struct connection_record {
  std::string peer;      // address of the connection we accepted (or the client a PROXY header named)
  std::string via;       // with --accept-proxy-protocol: the address that sent the header (else empty)
  std::string identity;  // the TLS peer's certificate identity (tunnel-out: client, tunnel-in: server)
  std::string target;    // where we relayed to
  std::string service;   // the service's name ("" when it has none)
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// `resumed`: the handshake resumed an earlier session (logged as resumed=true).
void log_authorized(const connection_record& rec, const std::string& tls_version,
                    const std::string& ciphersuite, bool resumed = false);
void log_closed(const connection_record& rec, std::uint64_t bytes_up, std::uint64_t bytes_down,
                const std::string& reason, bool clean);

}  // namespace tunnel::ops
