#pragma once
// The command-line flags of mux mode: --mode, --pool, --keepalive, --rotate-after, kept
// apart from cli.cpp so their rules live in one place.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/service.hpp"

namespace tunnel::config {

struct mux_flags {
  std::string mode;                        // "" = not given
  long long pool = -1;                     // -1 = not given
  std::string keepalive;                   // "" = not given
  std::vector<std::string> rotate_after;   // each a SIZE or a DUR
};

// Registers the flags on `app` for the given role; `f` must outlive parsing.
void add_mux_flags(CLI::App& app, mux_flags& f, tls::role side);

// Applies the flags to `s` (after --threads and --udp are resolved). Returns a one-line
// reason naming the flag on a mistake, nullopt when valid. Pure.
std::optional<std::string> apply_mux_flags(const mux_flags& f, service& s);

// "1048576", "64KiB", "16MiB", "2GiB" (also kB/MB/GB as powers of 1000). nullopt when
// malformed or above 2^50.
std::optional<std::uint64_t> parse_size(const std::string& text);

}  // namespace tunnel::config
