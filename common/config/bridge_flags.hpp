#pragma once
// The flags of a TLS bridge: TLS on a legacy leg, for legacy ends that already speak TLS.
//   tunnel-out: --target-tls [--target-ca FILE] [--target-server-name NAME]
//               [--target-cert FILE --target-key FILE] [--target-alpn PROTO]...
//   tunnel-in:  --listen-cert FILE --listen-key FILE [--listen-ca FILE] [--listen-alpn PROTO]...
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/service.hpp"

namespace tunnel::config {

struct bridge_flags {
  bool target_tls = false;
  std::string ca, crl, server_name, cert, key;  // --target-* or --listen-*
  std::vector<std::string> alpn;
};

// Registers the flags of `side` on `app`; `f` must outlive parsing.
void add_bridge_flags(CLI::App& app, bridge_flags& f, tls::role side);

// Sets s.bridge from the flags (after --listen/--target and --udp are validated). Returns a
// one-line reason naming the flag on a mistake, nullopt when valid. Pure: opens no file.
std::optional<std::string> apply_bridge_flags(const bridge_flags& f, service& s);

}  // namespace tunnel::config
