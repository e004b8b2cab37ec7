#include "config/flags.hpp"

#include <thread>

#include "config/cli.hpp"
#include "config/duration.hpp"
#include "config/number_flag.hpp"

namespace tunnel::config {
namespace {

std::chrono::milliseconds duration_flag(const char* flag, const std::string& text) {
  auto d = parse_duration(text);
  if (!d) throw usage_error(std::string(flag) + " " + text + ": not a duration (use e.g. 250ms, 10s, 5m, 1h)");
  return *d;
}

net::address address_flag(const char* flag, const std::string& text, bool listening) {
  std::string why;
  auto a = net::parse_address(text, why, listening);
  if (!a) throw usage_error(std::string(flag) + " " + text + ": " + why);
  return *a;
}

}  // namespace

void add_flags(CLI::App& app, raw_flags& f, tls::role side) {
  const bool server = side == tls::role::server;
  app.add_option("--config", f.config, "FILE: run the services of this TOML file (keys: the flags without --)");
  app.add_option("--service", f.service,
                 server ? "NAME clients select this service by: SNI, or the mux stream's service (default: any)"
                        : "NAME of the service to ask tunnel-out for: sent as SNI and in mux streams (default: none)");
  app.add_option("--listen", f.listen, server ? "ADDR to accept TLS connections on (required)"
                                              : "ADDR to accept legacy plaintext connections on (required)");
  if (server) {
    app.add_option("--target", f.target, "ADDR of the legacy server to relay to (required)");
  } else {
    app.add_option("--connect", f.target, "ADDR of tunnel-out, host:port (required)");
  }
  // Required unless --psk-file is given (checked in apply_trust_flags).
  app.add_option("--cert", f.cert, "FILE: our certificate chain (PEM, leaf first)");
  app.add_option("--key", f.key, "FILE: our private key (PEM/DER, unencrypted)");
  app.add_option("--ca", f.ca, "FILE: CA bundle the peer's certificate must chain to");
  add_trust_flags(app, f.trust);
  add_mux_flags(app, f.mux, side);
  add_bridge_flags(app, f.bridge, side);
  add_plain_leg_flags(app, f.plain, side);
  add_udp_tls_flags(app, f.udp_tls, side);
  if (server) {
    app.add_option("--allow-cn", f.allow_cn, "admit clients with this subject CN (repeatable)");
    app.add_option("--allow-dns", f.allow_dns, "admit clients with this DNS SAN (repeatable)");
    app.add_option("--allow-uri", f.allow_uri, "admit clients with this URI SAN, e.g. a SPIFFE ID (repeatable)");
    app.add_option("--allow-ip", f.allow_ip, "admit clients with this IP SAN (repeatable)");
    app.add_option("--allow-spki-sha256", f.allow_spki, "admit clients whose public key has this SHA-256 (hex, repeatable)");
  } else {
    app.add_option("--server-name", f.server_name, "NAME the server certificate must carry (default: host of --connect)");
    app.add_option("--pin-spki-sha256", f.pins, "accept only a server key with this SHA-256 (hex, repeatable)");
  }
  app.add_option("--tls-min", f.tls_min, "lowest TLS version accepted: 1.2 or 1.3 (default 1.3)");
  app.add_option("--connect-timeout", f.connect_timeout, "DUR to dial the next hop (default 10s)");
  app.add_option("--handshake-timeout", f.handshake_timeout, "DUR for the TLS handshake (default 10s)");
  app.add_option("--idle-timeout", f.idle_timeout, "DUR with no byte either way before closing (default 1h, 0: never)");
  app.add_option("--close-timeout", f.close_timeout, "DUR the other direction may run after a half-close (default 60s, 0: no limit)");
  app.add_option("--max-lifetime", f.max_lifetime, "DUR a TCP connection may last, however busy, before it is closed (default 0: no limit)");
  app.add_option("--shutdown-timeout", f.shutdown_timeout, "DUR live connections get after SIGTERM (default 30s)");
  app.add_option("--max-conns", f.max_conns, "N connections at once; more are closed at once (default: from the open-file limit)")->check(decimal_number());
  app.add_option("--threads", f.threads, "N worker threads (default: number of cores)")->check(decimal_number());
  app.add_option("--busy-poll", f.busy_poll,
                 "USEC a worker with nothing to do keeps looking for work before it sleeps: lower latency for "
                 "CPU time (0..10000, default 0: off)")->check(decimal_number());
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error (default info)");
  app.add_option("--log-format", f.log_format, "text|json (default text)");
  app.add_option("--status", f.status, "ADDR for the HTTP endpoint /healthz, /readyz, /metrics (default: none)");
  app.add_option("--user", f.user, "NAME to switch to after binding, when started as root");
  app.add_flag("--check-config", f.check_config, "validate the settings and files, print them, exit 0 (or 2)");
  app.add_flag("--udp", f.udp, "carry UDP datagrams instead of TCP: DTLS 1.2 on the secure leg, one session per flow");
  app.add_option("--mtu", f.mtu, "N: largest datagram on the DTLS leg, 576..16384 (default 1400; --udp)")->check(decimal_number());
  app.add_option("--max-flows", f.max_flows, "N UDP flows at once; more are dropped (default: from the open-file limit, at most 10000; --udp)")->check(decimal_number());
  app.add_option("--flow-idle-timeout", f.flow_idle_timeout, "DUR with no datagram either way before a UDP flow ends (default 60s; --udp)");
}

namespace {

// `value` of `flag` when it lies in lo..hi; else the one-line refusal.
long long bounded_count(const char* flag, long long value, long long lo, long long hi) {
  if (value < lo || value > hi)
    throw usage_error(std::string(flag) + " " + std::to_string(value) + ": must be " + std::to_string(lo) + ".." +
                      std::to_string(hi));
  return value;
}

void validate_udp(const raw_flags& f, service& s) {
  if (!f.udp) {
    if (f.mtu) throw usage_error("--mtu: only with --udp");
    if (f.max_flows) throw usage_error("--max-flows: only with --udp");
    if (!f.flow_idle_timeout.empty()) throw usage_error("--flow-idle-timeout: only with --udp");
    return;
  }
  const bool server = s.side == tls::role::server;
  if (s.listen.is_unix()) throw usage_error("--listen " + s.listen.to_string() + ": UDP mode needs host:port");
  if (s.target.is_unix())
    throw usage_error(std::string(server ? "--target " : "--connect ") + s.target.to_string() +
                      ": UDP mode needs host:port");
  s.udp.enabled = true;
  s.tls.carrier = tls::transport::datagram;
  if (f.mtu) {
    // Below 576 (the IPv4 minimum reassembly size) the handshake fragments absurdly; above
    // 16384 a record could not fill the datagram anyway.
    s.udp.mtu = static_cast<std::uint16_t>(bounded_count("--mtu", *f.mtu, 576, 16384));
  }
  // One socket per flow on either side, and each flow holds a DTLS context (~50 KiB).
  s.udp.max_flows = f.max_flows ? static_cast<std::size_t>(bounded_count("--max-flows", *f.max_flows, 1, 1'000'000))
                                : std::min<std::size_t>(default_max_conns(s.threads), 10'000);
  if (!f.flow_idle_timeout.empty()) {
    s.udp.flow_idle = duration_flag("--flow-idle-timeout", f.flow_idle_timeout);
    // UDP has no close: a flow with no idle limit would hold its slot forever.
    if (s.udp.flow_idle.count() == 0) throw usage_error("--flow-idle-timeout: must be greater than 0");
  }
}

// Whether dialling `target` reaches `listen` itself: the same address, or the same port on a
// loopback address of a wildcard listener. (Names are not resolved here.)
bool dials_itself(const net::address& listen, const net::address& target) {
  if (listen.is_unix() || target.is_unix()) return listen.is_unix() && target.is_unix() && listen.path == target.path;
  if (listen.port != target.port) return false;
  if (listen.host == target.host) return true;
  const bool wildcard = listen.host == "0.0.0.0" || listen.host == "::";
  const bool loopback = target.host == "localhost" || target.host == "::1" || target.host.rfind("127.", 0) == 0;
  return wildcard && loopback;
}

// "postgres", "plc-7", "db.site-a": what a TLS SNI may carry, short enough for a label.
bool valid_service_name(const std::string& name) {
  if (name.empty() || name.size() > 63 || name.front() == '.' || name.front() == '-') return false;
  return name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") ==
         std::string::npos;
}

}  // namespace

service validate(tls::role side, const raw_flags& f) {
  service s;
  s.side = side;
  s.tls.side = side;
  const bool server = side == tls::role::server;
  if (f.listen.empty()) throw usage_error("--listen is required");
  if (f.target.empty()) throw usage_error(server ? "--target is required" : "--connect is required");
  if (!f.service.empty() && !valid_service_name(f.service))
    throw usage_error("--service " + f.service + ": use 1-63 letters, digits, '.', '-' or '_'");
  s.name = f.service;
  s.listen = address_flag("--listen", f.listen, true);
  s.target = address_flag(server ? "--target" : "--connect", f.target, false);
  if (!server && s.target.is_unix())
    throw usage_error("--connect " + f.target + ": tunnel-out is reached over TCP (host:port)");
  if (server && s.listen.is_unix())
    throw usage_error("--listen " + f.listen + ": the TLS port must be TCP (host:port)");
  if (dials_itself(s.listen, s.target))
    throw usage_error(std::string(server ? "--target " : "--connect ") + f.target + ": the address this process " +
                      "listens on (--listen " + f.listen + "); every connection would loop back into it");
  s.files = {f.cert, f.key, f.ca};
  if (f.tls_min == "1.3") s.tls.min_version = tls::version::tls1_3;
  else if (f.tls_min == "1.2") s.tls.min_version = tls::version::tls1_2;
  else throw usage_error("--tls-min " + f.tls_min + ": must be 1.2 or 1.3");

  policy::allow_list& allow = s.tls.routes.front().allow;  // this service's own route
  s.tls.routes.front().name = s.name;
  for (const auto& cn : f.allow_cn) {
    if (cn.empty()) throw usage_error("--allow-cn: empty name");
    allow.cn.push_back(cn);
  }
  for (const auto& d : f.allow_dns) {
    if (d.empty()) throw usage_error("--allow-dns: empty name");
    allow.dns.push_back(d);
  }
  for (const auto& u : f.allow_uri) {
    if (u.empty()) throw usage_error("--allow-uri: empty URI");
    allow.uri.push_back(u);
  }
  for (const auto& ip : f.allow_ip) {
    auto c = policy::canonical_ip(ip);
    if (!c) throw usage_error("--allow-ip " + ip + ": not an IP address");
    allow.ip.push_back(*c);
  }
  for (const auto& h : f.allow_spki) {
    auto d = policy::parse_spki_hex(h);
    if (!d) throw usage_error("--allow-spki-sha256 " + h + ": expected 64 hex digits");
    allow.spki.push_back(*d);
  }
  for (const auto& h : f.pins) {
    auto d = policy::parse_spki_hex(h);
    if (!d) throw usage_error("--pin-spki-sha256 " + h + ": expected 64 hex digits");
    s.tls.pins.push_back(*d);
  }
  if (!server) {
    // A service name rides in the SNI; the server's name is then checked by us (engine).
    if (!f.service.empty() && !f.udp) s.tls.sni = f.service;
    if (!f.server_name.empty()) s.tls.server_name = f.server_name;
    else if (s.tls.pins.empty()) s.tls.server_name = s.target.host;
    // With pins and no explicit name, the pin replaces the name check.
  }

  s.limits.connect = duration_flag("--connect-timeout", f.connect_timeout);
  s.limits.handshake = duration_flag("--handshake-timeout", f.handshake_timeout);
  s.limits.idle = duration_flag("--idle-timeout", f.idle_timeout);
  s.limits.close = duration_flag("--close-timeout", f.close_timeout);
  s.limits.lifetime = duration_flag("--max-lifetime", f.max_lifetime);
  s.limits.shutdown = duration_flag("--shutdown-timeout", f.shutdown_timeout);
  if (s.limits.connect.count() == 0) throw usage_error("--connect-timeout: must be greater than 0");
  if (s.limits.handshake.count() == 0) throw usage_error("--handshake-timeout: must be greater than 0");

  s.threads = f.threads ? static_cast<unsigned>(bounded_count("--threads", *f.threads, 1, 256))
                        : std::max(1u, std::thread::hardware_concurrency());
  s.max_conns = f.max_conns ? static_cast<std::size_t>(bounded_count("--max-conns", *f.max_conns, 1, 1'000'000))
                            : default_max_conns(s.threads);
  if (f.busy_poll < 0 || f.busy_poll > 10'000)
    throw usage_error("--busy-poll " + std::to_string(f.busy_poll) + ": must be 0..10000 (microseconds)");
  s.busy_poll = std::chrono::microseconds(f.busy_poll);

  static const std::pair<const char*, spdlog::level::level_enum> levels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug}, {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},   {"error", spdlog::level::err}};
  bool level_ok = false;
  for (auto [name, level] : levels)
    if (f.log_level == name) s.log_level = level, level_ok = true;
  if (!level_ok) throw usage_error("--log-level " + f.log_level + ": must be trace, debug, info, warn or error");
  if (f.log_format == "text") s.log_format = ops::log_format::text;
  else if (f.log_format == "json") s.log_format = ops::log_format::json;
  else throw usage_error("--log-format " + f.log_format + ": must be text or json");
  validate_udp(f, s);
  if (auto why = apply_udp_tls_flags(f.udp_tls, s)) throw usage_error(*why);
  if (auto why = apply_trust_flags(f.trust, !f.server_name.empty(), s)) throw usage_error(*why);
  if (auto why = apply_mux_flags(f.mux, s)) throw usage_error(*why);
  if (!f.status.empty()) s.status = address_flag("--status", f.status, true);
  if (f.user.find_first_of(" :/") != std::string::npos) throw usage_error("--user " + f.user + ": not a user name");
  s.user = f.user;
  if (auto why = apply_bridge_flags(f.bridge, s)) throw usage_error(*why);
  if (auto why = apply_plain_leg_flags(f.plain, s)) throw usage_error(*why);
  if (!server && s.bridge && s.plain.accept_proxy)
    throw usage_error("--accept-proxy-protocol: not with --listen-cert (a PROXY header before TLS is not supported)");
  return s;
}

}  // namespace tunnel::config
