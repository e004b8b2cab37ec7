#include "config/trust_flags.hpp"

#include <charconv>

#include "config/duration.hpp"

namespace tunnel::config {
namespace {
constexpr long long max_warning_days = 365;
constexpr std::chrono::hours max_resumption{24};
}  // namespace

void add_trust_flags(CLI::App& app, trust_flags& f) {
  app.add_option("--crl", f.crl, "FILE: revocation list(s) for --ca, PEM or DER; revoked peers are refused");
  app.add_option("--psk-file", f.psk_file,
                 "FILE holding one line identity:hexkey (16..48 bytes, mode 0600): pre-shared key instead of "
                 "--cert/--key/--ca");
  app.add_option("--reload-interval", f.reload_interval,
                 "DUR between checks of the credential files' content; a change reloads them (default 0: only on "
                 "SIGHUP)");
  app.add_option("--expiry-warning", f.expiry_warning,
                 "DUR or Nd: warn when our or a peer's certificate expires within this (default 14d)");
  app.add_option("--resumption", f.resumption,
                 "DUR a TLS 1.3 session may be resumed without certificates (identity kept, forgotten on reload; "
                 "0: full handshake every connection; default 10m, at most 24h)");
}

std::optional<std::chrono::seconds> parse_expiry_warning(const std::string& text) {
  if (text.size() >= 2 && text.back() == 'd') {
    long long days = -1;
    const char* end = text.data() + text.size() - 1;
    auto [p, ec] = std::from_chars(text.data(), end, days);
    if (ec != std::errc() || p != end || days < 0 || days > max_warning_days) return std::nullopt;
    return std::chrono::seconds(days * 86400);
  }
  auto d = parse_duration(text);
  if (!d) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::seconds>(*d);
}

std::optional<std::string> apply_trust_flags(const trust_flags& f, bool server_name_given, service& s) {
  const bool server = s.side == tls::role::server;
  auto reload = parse_duration(f.reload_interval);
  if (!reload) return "--reload-interval " + f.reload_interval + ": not a duration (use e.g. 30s, 5m, 1h; 0: off)";
  // Each check reads and hashes every credential file: more often than once a second
  // only burns CPU.
  if (reload->count() > 0 && *reload < std::chrono::seconds(1))
    return "--reload-interval " + f.reload_interval + ": must be 0 (off) or at least 1s";
  s.reload_interval = *reload;
  auto warning = parse_expiry_warning(f.expiry_warning);
  if (!warning) return "--expiry-warning " + f.expiry_warning + ": not a duration (use e.g. 14d, 72h; at most 365d)";
  s.tls.expiry_warning = *warning;
  auto resumption = parse_duration(f.resumption);
  if (!resumption || *resumption > max_resumption || (resumption->count() > 0 && *resumption < std::chrono::seconds(1)))
    return "--resumption " + f.resumption + ": must be 0 (off) or a duration from 1s to 24h";
  s.tls.resumption = std::chrono::duration_cast<std::chrono::seconds>(*resumption);
  s.files.crl = f.crl;
  s.files.psk = f.psk_file;

  if (f.psk_file.empty()) {
    if (s.files.cert.empty()) return std::string("--cert is required (or --psk-file for a pre-shared key)");
    if (s.files.key.empty()) return std::string("--key is required (or --psk-file for a pre-shared key)");
    if (s.files.ca.empty()) return std::string("--ca is required (or --psk-file for a pre-shared key)");
    return std::nullopt;
  }
  // PSK mode: no certificate is presented or checked. Mixing would let a peer in by either
  // route, so every certificate flag is refused rather than silently ignored.
  const char* conflict = nullptr;
  if (!s.files.cert.empty()) conflict = "--cert";
  else if (!s.files.key.empty()) conflict = "--key";
  else if (!s.files.ca.empty()) conflict = "--ca";
  else if (!f.crl.empty()) conflict = "--crl";
  else if (server && !s.tls.routes.front().allow.empty()) conflict = "--allow-*";
  else if (!server && !s.tls.pins.empty()) conflict = "--pin-spki-sha256";
  else if (!server && server_name_given) conflict = "--server-name";
  if (conflict)
    return std::string(conflict) + ": not with --psk-file (a pre-shared key replaces certificates on both sides)";
  s.tls.server_name.reset();
  return std::nullopt;
}

}  // namespace tunnel::config
