#pragma once
// The log lines of a UDP flow: when its DTLS session is authorized and when it ends.
// Counts are named from the legacy client's point of view on both binaries, as for TCP:
// up = legacy client -> legacy server, down = legacy server -> legacy client.
#include <chrono>
#include <cstdint>
#include <string>

namespace tunnel::ops {

struct flow_record {
  std::string peer;      // tunnel-in: the legacy client; tunnel-out: tunnel-in's address
  std::string identity;  // the DTLS peer's certificate identity
  std::string target;    // where datagrams are relayed to
  std::string service;   // the service's name, when the carrier names one (flows over TLS)
  std::string origin;    // tunnel-out, flows over TLS: the legacy client, as tunnel-in saw it
  bool over_tls = false; // carried as mux datagram frames rather than DTLS
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::uint64_t datagrams_up = 0, datagrams_down = 0;
  std::uint64_t bytes_up = 0, bytes_down = 0;
};

// `connection_id`: DTLS only (a flow over TLS has none).
void log_flow_authorized(const flow_record& rec, const std::string& version, const std::string& ciphersuite,
                         bool connection_id);
void log_flow_closed(const flow_record& rec, const std::string& reason);

}  // namespace tunnel::ops
