#pragma once
// The command-line flags of the plain legs: --proxy-protocol and --transparent
// (tunnel-out), --accept-proxy-protocol, --socket-mode and --socket-owner (tunnel-in), kept
// apart from cli.cpp so their rules live in one place.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/service.hpp"

namespace tunnel::config {

struct plain_leg_flags {
  std::string proxy_protocol;          // "" = not given
  bool transparent = false;
  bool accept_proxy_protocol = false;
  std::vector<std::string> accept_proxy_from;
  std::string socket_mode, socket_owner;  // "" = not given
};

// Registers the flags of the given role on `app`; `f` must outlive parsing.
void add_plain_leg_flags(CLI::App& app, plain_leg_flags& f, tls::role side);

// Applies the flags to `s` (after --listen, --target, --udp and --user are validated).
// Returns a one-line reason naming the flag on a mistake, nullopt when valid. Not pure:
// --socket-owner looks its names up in the user database, and --transparent probes whether
// this process may set IP_TRANSPARENT (one socket, opened and closed, no traffic).
std::optional<std::string> apply_plain_leg_flags(const plain_leg_flags& f, service& s);

// "660", "0660": octal permission bits, at most 0777. nullopt when malformed. Pure.
std::optional<mode_t> parse_socket_mode(const std::string& text);

}  // namespace tunnel::config
