#pragma once
// The command-line flags of issue "certificates and trust": --crl, --psk-file,
// --reload-interval, --expiry-warning and --resumption, kept apart from cli.cpp so the rules on which
// credential flags go together live in one place.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "config/service.hpp"

namespace tunnel::config {

struct trust_flags {
  std::string crl, psk_file;
  std::string reload_interval = "0";
  std::string expiry_warning = "14d";
  std::string resumption = "10m";
};

// Registers the flags on `app`; `f` must outlive parsing.
void add_trust_flags(CLI::App& app, trust_flags& f);

// Applies the flags to `s` (whose other flags are already validated; `server_name_given`
// says whether --server-name was on the command line). Decides the credential mode:
// with --psk-file, --cert/--key/--ca/--crl and every certificate check (--allow-*,
// --pin-spki-sha256, --server-name) are refused; without it, --cert/--key/--ca are
// required. Returns a one-line reason naming the flag on a mistake, nullopt when valid.
// Pure: opens no file.
std::optional<std::string> apply_trust_flags(const trust_flags& f, bool server_name_given, service& s);

// "14d", "36h", "90m", or any DUR: at most 365 days. Pure; nullopt when malformed.
std::optional<std::chrono::seconds> parse_expiry_warning(const std::string& text);

}  // namespace tunnel::config
