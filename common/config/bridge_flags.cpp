#include "config/bridge_flags.hpp"

namespace tunnel::config {
namespace {

// ALPN protocol names are 1..255 bytes on the wire; printable ASCII keeps logs readable.
std::optional<std::string> check_alpn(const char* flag, const std::vector<std::string>& list) {
  for (const auto& p : list)
    if (p.empty() || p.size() > 255 || p.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                          "0123456789-._/+") != std::string::npos)
      return std::string(flag) + " " + p + ": not an ALPN protocol name";
  return std::nullopt;
}

std::optional<std::string> apply_target(const bridge_flags& f, service& s) {
  if (!f.target_tls) {
    for (const auto& [flag, given] : {std::pair{"--target-ca", !f.ca.empty()}, {"--target-crl", !f.crl.empty()},
                                      {"--target-server-name", !f.server_name.empty()},
                                      {"--target-cert", !f.cert.empty()}, {"--target-key", !f.key.empty()},
                                      {"--target-alpn", !f.alpn.empty()}})
      if (given) return std::string(flag) + ": only with --target-tls";
    return std::nullopt;
  }
  if (s.udp.enabled) return std::string("--target-tls: not with --udp (the target leg of UDP is plain)");
  if (f.ca.empty()) return std::string("--target-ca is required with --target-tls (the CA of the target's certificate)");
  if (f.cert.empty() != f.key.empty()) return std::string("--target-cert and --target-key go together");
  if (auto why = check_alpn("--target-alpn", f.alpn)) return why;
  bridge_settings b;
  b.tls.side = tls::role::client;
  b.tls.min_version = tls::version::tls1_2;
  b.tls.legacy_leg = true;
  b.tls.alpn = f.alpn;
  b.tls.expiry_warning = s.tls.expiry_warning;
  if (!f.server_name.empty()) b.tls.server_name = f.server_name;
  else if (s.target.is_unix()) return std::string("--target-server-name is required with --target-tls to a unix: target");
  else b.tls.server_name = s.target.host;
  b.files = {f.cert, f.key, f.ca, f.crl, "", false, true, "--target-"};
  s.bridge = std::move(b);
  return std::nullopt;
}

std::optional<std::string> apply_listener(const bridge_flags& f, service& s) {
  if (f.cert.empty() && f.key.empty()) {
    if (!f.ca.empty()) return std::string("--listen-ca: only with --listen-cert and --listen-key");
    if (!f.crl.empty()) return std::string("--listen-crl: only with --listen-cert, --listen-key and --listen-ca");
    if (!f.alpn.empty()) return std::string("--listen-alpn: only with --listen-cert and --listen-key");
    return std::nullopt;
  }
  if (f.cert.empty() || f.key.empty()) return std::string("--listen-cert and --listen-key go together");
  if (s.udp.enabled) return std::string("--listen-cert: not with --udp (the legacy leg of UDP is plain)");
  if (auto why = check_alpn("--listen-alpn", f.alpn)) return why;
  if (!f.crl.empty() && f.ca.empty()) return std::string("--listen-crl: only with --listen-ca (it revokes that CA's certificates)");
  bridge_settings b;
  b.tls.side = tls::role::server;
  b.tls.min_version = tls::version::tls1_2;
  b.tls.legacy_leg = true;
  b.tls.verify_peer = !f.ca.empty();
  b.tls.alpn = f.alpn;
  b.tls.expiry_warning = s.tls.expiry_warning;
  b.files = {f.cert, f.key, f.ca, f.crl, "", true, false, "--listen-"};
  s.bridge = std::move(b);
  return std::nullopt;
}

}  // namespace

void add_bridge_flags(CLI::App& app, bridge_flags& f, tls::role side) {
  if (side == tls::role::server) {
    app.add_flag("--target-tls", f.target_tls, "speak TLS to the target (a legacy server that already does TLS)");
    app.add_option("--target-ca", f.ca, "FILE: CA bundle the target's certificate must chain to (--target-tls)");
    app.add_option("--target-server-name", f.server_name, "NAME the target's certificate must carry (default: host of --target)");
    app.add_option("--target-crl", f.crl, "FILE: revocation list(s) for --target-ca, PEM or DER; a revoked target is refused");
    app.add_option("--target-cert", f.cert, "FILE: client certificate to present to the target (with --target-key)");
    app.add_option("--target-key", f.key, "FILE: private key of --target-cert");
    app.add_option("--target-alpn", f.alpn, "PROTO to offer the target by ALPN, e.g. postgresql (repeatable)");
  } else {
    app.add_option("--listen-cert", f.cert, "FILE: accept TLS from legacy clients with this certificate (with --listen-key)");
    app.add_option("--listen-key", f.key, "FILE: private key of --listen-cert");
    app.add_option("--listen-ca", f.ca, "FILE: also require legacy clients' certificates, chaining to this CA");
    app.add_option("--listen-crl", f.crl, "FILE: revocation list(s) for --listen-ca, PEM or DER; revoked legacy clients are refused");
    app.add_option("--listen-alpn", f.alpn, "PROTO legacy clients may negotiate by ALPN, e.g. postgresql (repeatable)");
  }
}

std::optional<std::string> apply_bridge_flags(const bridge_flags& f, service& s) {
  return s.side == tls::role::server ? apply_target(f, s) : apply_listener(f, s);
}

}  // namespace tunnel::config
