#pragma once
// tunnel-out's use of the process's penalty box (policy/penalty_box.hpp), shared by the TLS
// listeners and the DTLS socket: the same source is kept out of both.
#include <chrono>
#include <optional>
#include <string>

#include "net/udp_socket.hpp"
#include "policy/penalty_box.hpp"
#include "proxy/ip_endpoint.hpp"

namespace tunnel::server::penalty {

using source = policy::penalty_box::source;

// Why a penalised source's connection, flow or handshake step is refused.
inline constexpr const char* refusal = "source penalised: an earlier handshake from it failed after costing much CPU";

// The box's key for an address (IPv4 mapped into IPv6); nullopt for none (a Unix socket).
std::optional<source> source_of(const std::optional<proxy::ip_endpoint>& client);
source source_of(const net::udp::endpoint& from);

// Whether `from` is kept out now.
bool penalised(const source& from);

// A handshake from `from` (shown as `peer`) failed after costing `cpu`: penalises the
// source when that was too much, with a warning.
void handshake_failed(const source& from, std::chrono::nanoseconds cpu, const std::string& peer);

}  // namespace tunnel::server::penalty
