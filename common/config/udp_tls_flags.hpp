#pragma once
// The command-line flags of UDP over TLS (UDP flows as mux datagram frames): tunnel-in's
// --udp-over-tls, --tls-fallback and --dtls-retry, tunnel-out's --udp-over-tls and
// --tls-listen, kept apart from cli.cpp so their rules live in one place.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "config/service.hpp"

namespace tunnel::config {

struct udp_tls_flags {
  bool over_tls = false;
  std::string tls_fallback;  // tunnel-in: "" = not given, "off", or ADDR
  std::string dtls_retry;    // tunnel-in: "" = not given
  std::string tls_listen;    // tunnel-out: "" = not given
};

// Registers the flags on `app` for the given role; `f` must outlive parsing.
void add_udp_tls_flags(CLI::App& app, udp_tls_flags& f, tls::role side);

// Applies the flags to `s` (after --udp, --listen and --connect are resolved). Returns a
// one-line reason naming the flag on a mistake, nullopt when valid. Pure.
std::optional<std::string> apply_udp_tls_flags(const udp_tls_flags& f, service& s);

// tunnel-in: the settings of the TLS leg of a UDP service (the mux connections its flows
// ride in TLS mode): TCP to `s.udp.tls_target`, ALPN tunnel-mux/1, the service's name as
// SNI. Everything else (credentials, checks, timeouts, pool, keepalive) as `s`.
service tls_leg_of(const service& s);

// tunnel-in: whether connections made for `a` serve `b` as they are: the same tunnel-out
// address, credentials, server checks and mux settings. A UDP service's TLS leg then rides
// a TCP service's mux connections instead of keeping its own.
bool same_tunnel(const service& a, const service& b);

}  // namespace tunnel::config
