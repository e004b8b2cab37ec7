// --check-config output: every effective setting, one `key = value` per line, defaults
// filled in, so an operator reviews exactly what will run.
#include <cstdio>
#include <sstream>

#include "config/cli.hpp"
#include "config/duration.hpp"

namespace tunnel::config {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "(none)" : out;
}

void describe_plain_legs(std::ostringstream& o, const service& svc) {
  const auto& p = svc.plain;
  if (svc.side == tls::role::server) {
    o << "proxy_protocol = " << (!p.send_proxy ? "(off)" : p.send_proxy == proxy::version::v1 ? "v1" : "v2") << "\n";
    o << "transparent = " << (p.transparent ? "yes" : "no") << "\n";
    return;
  }
  o << "accept_proxy_protocol = " << (p.accept_proxy ? "yes" : "no") << "\n";
  if (p.accept_proxy && !svc.listen.is_unix()) {
    std::string from;
    for (const auto& r : p.proxy_from) from += (from.empty() ? "" : ",") + r.to_string();
    o << "accept_proxy_from = " << (from.empty() ? std::string("(any)") : from) << "\n";
  }
  if (!svc.listen.is_unix()) return;
  char mode[8] = "(umask)";
  if (p.listen_access.mode) std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(*p.listen_access.mode));
  o << "socket_mode = " << mode << "\n";
  o << "socket_owner = " << (p.socket_owner.empty() ? std::string("(unchanged)") : p.socket_owner) << "\n";
}

void describe_udp_over_tls(std::ostringstream& o, const service& svc) {
  const auto& u = svc.udp;
  o << "udp_over_tls = " << (u.over_tls ? "yes" : "no") << "\n";
  if (svc.side == tls::role::server) {
    if (u.over_tls) o << "tls_listen = " << u.tls_listen->to_string() << "\n";
    return;
  }
  if (u.over_tls) return;
  o << "tls_fallback = " << (u.tls_target ? u.tls_target->to_string() : std::string("(off)")) << "\n";
  if (u.tls_target)
    o << "dtls_retry = " << format_duration(u.dtls_retry) << (u.dtls_retry.count() ? "" : " (stay on TLS)") << "\n";
}

}  // namespace

std::string describe(const service& svc) {
  const bool server = svc.side == tls::role::server;
  std::ostringstream o;
  o << "role = " << (server ? "tunnel-out" : "tunnel-in") << "\n";
  o << "service = " << (svc.name.empty() ? std::string(server ? "(any)" : "(none)") : svc.name) << "\n";
  o << "transport = "
    << (!svc.udp.enabled      ? "tcp (TLS)"
        : !svc.udp.over_tls ? "udp (DTLS 1.2)"
        : server            ? "udp (DTLS 1.2, and over TLS)"
                            : "udp (over TLS)")
    << "\n";
  o << "listen = " << svc.listen.to_string() << "\n";
  o << (server ? "target = " : "connect = ") << svc.target.to_string() << "\n";
  if (!svc.files.psk.empty()) {
    o << "psk_file = " << svc.files.psk << "\n";
  } else {
    o << "cert = " << svc.files.cert << "\nkey = " << svc.files.key << "\nca = " << svc.files.ca << "\n";
    o << "crl = " << (svc.files.crl.empty() ? std::string("(none: revocation not checked)") : svc.files.crl) << "\n";
    const auto warn = svc.tls.expiry_warning;
    o << "expiry_warning = "
      << (warn.count() % 86400 == 0 ? std::to_string(warn.count() / 86400) + "d" : format_duration(warn)) << "\n";
    o << "resumption = " << format_duration(svc.tls.resumption) << (svc.tls.resumption.count() ? "" : " (off)") << "\n";
  }
  o << "reload_interval = " << format_duration(svc.reload_interval) << (svc.reload_interval.count() ? "" : " (SIGHUP only)") << "\n";
  o << "tls_min = " << (svc.tls.min_version == tls::version::tls1_2 ? "1.2" : "1.3") << "\n";
  if (server) {
    const auto& a = svc.tls.routes.front().allow;
    std::vector<std::string> spki;
    for (const auto& d : a.spki) spki.push_back(policy::to_hex(d));
    o << "allow_cn = " << join(a.cn) << "\nallow_dns = " << join(a.dns) << "\nallow_uri = " << join(a.uri)
      << "\nallow_ip = " << join(a.ip) << "\nallow_spki_sha256 = " << join(spki) << "\n";
    if (a.empty()) o << "# no allow-list: every certificate issued by the CA is admitted\n";
  } else {
    std::vector<std::string> pins;
    for (const auto& d : svc.tls.pins) pins.push_back(policy::to_hex(d));
    o << "server_name = " << svc.tls.server_name.value_or("(none: pinned key only)") << "\n";
    o << "pin_spki_sha256 = " << join(pins) << "\n";
  }
  o << "connect_timeout = " << format_duration(svc.limits.connect) << "\n";
  o << "handshake_timeout = " << format_duration(svc.limits.handshake) << "\n";
  o << "idle_timeout = " << format_duration(svc.limits.idle) << "\n";
  o << "close_timeout = " << format_duration(svc.limits.close) << "\n";
  o << "max_lifetime = " << format_duration(svc.limits.lifetime) << "\n";
  o << "shutdown_timeout = " << format_duration(svc.limits.shutdown) << "\n";
  o << "max_conns = " << svc.max_conns << "\nthreads = " << svc.threads << "\n";
  o << "busy_poll = " << svc.busy_poll.count() << "\n";
  if (svc.udp.enabled) {
    o << "mtu = " << svc.udp.mtu << "\nmax_flows = " << svc.udp.max_flows
      << "\nflow_idle_timeout = " << format_duration(svc.udp.flow_idle) << "\n";
    describe_udp_over_tls(o, svc);
  }
  describe_plain_legs(o, svc);
  if (svc.bridge) {  // TLS on the legacy leg
    const auto& b = *svc.bridge;
    const std::string leg = server ? "target_" : "listen_";
    if (server) o << "target_tls = on\ntarget_server_name = " << b.tls.server_name.value_or("") << "\n";
    o << leg << "cert = " << (b.files.cert.empty() ? std::string("(none)") : b.files.cert) << "\n";
    o << leg << "ca = " << (b.files.ca.empty() ? std::string("(none: no client certificate asked)") : b.files.ca) << "\n";
    o << leg << "alpn = " << join(b.tls.alpn) << "\n";
  } else {
    o << (server ? "target_tls = off\n" : "listen_tls = off\n");
  }
  o << "status = " << (svc.status ? svc.status->to_string() : std::string("(off)")) << "\n";
  o << "user = " << (svc.user.empty() ? std::string("(unchanged)") : svc.user) << "\n";
  return o.str();
}

std::string describe(const settings& all) {
  if (all.file.empty()) return describe(all.process());
  std::string out = "# " + all.file + ": " + std::to_string(all.services.size()) + " service(s)\n";
  for (const auto& svc : all.services) {
    const std::string& table = svc.origins.at("");
    out += "\n[" + table.substr(table.find(": ") + 2) + "]\n" + describe(svc);
  }
  return out;
}

}  // namespace tunnel::config
