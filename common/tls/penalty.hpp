#pragma once
// The listeners' use of the process's penalty box (policy/penalty_box.hpp): tunnel-out's TLS
// port and DTLS socket, and tunnel-in's TLS listener for legacy clients (--listen-cert),
// share one table, so a source is kept out of all of them at once.
#include <chrono>
#include <optional>
#include <string>

#include "net/udp_socket.hpp"
#include "policy/penalty_box.hpp"
#include "proxy/ip_endpoint.hpp"
#include "tls/engine.hpp"

namespace tunnel::tls::penalty {

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

// At accept: true, with a `connection refused` warning and outcome `penalised` counted,
// when the connection's source is kept out (the caller closes it).
bool refused_at_accept(const std::optional<source>& from, const std::string& peer);

// For engine::watch_steps: checked again before each handshake step, not only at accept
// (connections a source opened together all passed that check before its first costly
// failure was known), and a failure recorded within its step, before any other
// connection's next step runs.
engine::step_watch watch(const source& from, const std::string& peer);

}  // namespace tunnel::tls::penalty
