#include "config/udp_tls_flags.hpp"

#include "config/duration.hpp"

namespace tunnel::config {

void add_udp_tls_flags(CLI::App& app, udp_tls_flags& f, tls::role side) {
  if (side == tls::role::client) {
    app.add_flag("--udp-over-tls", f.over_tls,
                 "carry every UDP flow as datagram frames over mux TLS connections to --connect (tunnel-out's "
                 "TLS port) instead of DTLS (--udp)");
    app.add_option("--tls-fallback", f.tls_fallback,
                   "ADDR (TCP) or off: where flows go over TLS when tunnel-out's UDP port gives no answer at all "
                   "(default: --connect's host:port over TCP; --udp)");
    app.add_option("--dtls-retry", f.dtls_retry,
                   "DUR: after falling back to TLS, try DTLS again this often and return to it once it works "
                   "(default 60s, 0: never; --udp)");
  } else {
    app.add_flag("--udp-over-tls", f.over_tls,
                 "also accept this UDP service's flows as datagram frames over mux TLS connections on "
                 "--tls-listen (--udp)");
    app.add_option("--tls-listen", f.tls_listen,
                   "ADDR: the TLS (TCP) port that accepts this UDP service's flows, alone or shared with TCP "
                   "services (default: --listen's address over TCP; --udp-over-tls)");
  }
}

namespace {

std::optional<std::string> apply_client(const udp_tls_flags& f, service& s) {
  auto& u = s.udp;
  u.over_tls = f.over_tls;
  if (f.over_tls) {
    if (!f.tls_fallback.empty()) return "--tls-fallback: not with --udp-over-tls (every flow goes over TLS already)";
    if (!f.dtls_retry.empty()) return "--dtls-retry: not with --udp-over-tls (DTLS is never used)";
    u.tls_target = s.target;
    return std::nullopt;
  }
  if (f.tls_fallback == "off") {
    if (!f.dtls_retry.empty()) return "--dtls-retry: not with --tls-fallback off (there is nothing to return from)";
    return std::nullopt;
  }
  if (f.tls_fallback.empty()) {
    u.tls_target = s.target;  // the same host and port, over TCP
  } else {
    std::string why;
    auto a = net::parse_address(f.tls_fallback, why, false);
    if (!a) return "--tls-fallback " + f.tls_fallback + ": " + why + " (or off)";
    if (a->is_unix()) return "--tls-fallback " + f.tls_fallback + ": tunnel-out is reached over TCP (host:port)";
    u.tls_target = *a;
  }
  if (!f.dtls_retry.empty()) {
    auto d = parse_duration(f.dtls_retry);
    if (!d) return "--dtls-retry " + f.dtls_retry + ": not a duration (use e.g. 30s, 5m)";
    // Each retry is one DTLS handshake: more often than every second would only add load.
    if (d->count() != 0 && *d < std::chrono::seconds(1)) return "--dtls-retry " + f.dtls_retry + ": 0 or at least 1s";
    u.dtls_retry = *d;
  }
  return std::nullopt;
}

std::optional<std::string> apply_server(const udp_tls_flags& f, service& s) {
  auto& u = s.udp;
  u.over_tls = f.over_tls;
  if (f.tls_listen.empty()) {
    if (f.over_tls) u.tls_listen = s.listen;
    return std::nullopt;
  }
  if (!f.over_tls) return "--tls-listen: only with --udp-over-tls";
  std::string why;
  auto a = net::parse_address(f.tls_listen, why, true);
  if (!a) return "--tls-listen " + f.tls_listen + ": " + why;
  if (a->is_unix()) return "--tls-listen " + f.tls_listen + ": the TLS port must be TCP (host:port)";
  u.tls_listen = *a;
  return std::nullopt;
}

}  // namespace

std::optional<std::string> apply_udp_tls_flags(const udp_tls_flags& f, service& s) {
  if (!s.udp.enabled) {
    if (f.over_tls) return "--udp-over-tls: only with --udp";
    if (!f.tls_fallback.empty()) return "--tls-fallback: only with --udp";
    if (!f.dtls_retry.empty()) return "--dtls-retry: only with --udp";
    if (!f.tls_listen.empty()) return "--tls-listen: only with --udp-over-tls";
    return std::nullopt;
  }
  return s.side == tls::role::client ? apply_client(f, s) : apply_server(f, s);
}

service tls_leg_of(const service& s) {
  service leg = s;
  leg.udp = {};  // a TCP connection: none of the DTLS settings apply
  leg.target = s.udp.tls_target.value_or(s.target);
  leg.tls.carrier = tls::transport::stream;
  leg.tls.mux_alpn = true;
  if (!s.name.empty()) leg.tls.sni = s.name;
  leg.mux.mode = carry_mode::mux;
  return leg;
}

bool same_tunnel(const service& a, const service& b) {
  const auto& fa = a.files;
  const auto& fb = b.files;
  return a.target.to_string() == b.target.to_string() && fa.cert == fb.cert && fa.key == fb.key && fa.ca == fb.ca &&
         fa.crl == fb.crl && fa.psk == fb.psk && a.tls.server_name == b.tls.server_name && a.tls.pins == b.tls.pins &&
         a.tls.min_version == b.tls.min_version && a.tls.resumption == b.tls.resumption && a.mux.keepalive == b.mux.keepalive &&
         a.mux.rotate_bytes == b.mux.rotate_bytes && a.mux.rotate_age == b.mux.rotate_age;
}

}  // namespace tunnel::config
