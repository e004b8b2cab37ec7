#pragma once
// The validated settings of one tunnel service, whatever they were written in.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/plain_legs.hpp"
#include "net/address.hpp"
#include "ops/log.hpp"
#include "tls/context.hpp"
#include "tls/credentials.hpp"

namespace tunnel::config {

using namespace std::chrono_literals;

struct timeouts {
  std::chrono::milliseconds connect = 10s;    // dialling the next hop
  std::chrono::milliseconds handshake = 10s;  // TLS handshake, either role
  std::chrono::milliseconds idle = 1h;        // no byte either way (0: none)
  std::chrono::milliseconds close = 60s;      // after the first half-close (0: none)
  std::chrono::milliseconds lifetime = 0ms;   // a TCP connection's whole life (0: none)
  std::chrono::milliseconds shutdown = 30s;   // drain on SIGTERM
};

// UDP mode (--udp): both legs carry datagrams, the secure leg as DTLS 1.2.
struct udp_settings {
  bool enabled = false;
  std::uint16_t mtu = 1400;                     // largest datagram on the secure leg
  std::size_t max_flows = 0;                    // resolved at start-up when not given
  std::chrono::milliseconds flow_idle = 60s;    // no datagram either way ends a flow
  // UDP over TLS: flows as datagram frames inside mux connections (config/udp_tls_flags.hpp).
  // tunnel-in: every flow over TLS; tunnel-out: flows are accepted on tls_listen too.
  bool over_tls = false;
  // tunnel-in: where the TLS leg goes (--connect with over_tls; else the fallback address,
  // nullopt when the fallback is off).
  std::optional<net::address> tls_target;
  std::chrono::milliseconds dtls_retry = 60s;   // tunnel-in: back to DTLS after a fallback (0: never)
  std::optional<net::address> tls_listen;       // tunnel-out with over_tls: its TLS port
};

// Mux mode (issue 4): many legacy TCP connections as streams over a few long-lived TLS
// connections (common/mux/PROTOCOL.md). tunnel-out always serves both modes on its port.
enum class carry_mode { automatic, mux, raw };

struct mux_settings {
  carry_mode mode = carry_mode::automatic;      // tunnel-in --mode
  std::size_t pool = 0;                         // tunnel-in --pool (resolved: --threads)
  std::chrono::milliseconds keepalive = 15s;    // --keepalive: silence that ends a connection (0: never)
  std::uint64_t rotate_bytes = 16ull << 30;     // --rotate-after SIZE (0: never)
  std::chrono::milliseconds rotate_age = 24h;   // --rotate-after DUR (0: never)
};

// One service. In a config file several run in one process; the process-wide settings
// (threads, logging, status, user, shutdown and reload timing) are then written once at
// the file's top level and copied into every service, so each service reads the same.
// TLS on a legacy leg (config/bridge_flags.hpp): tunnel-out's target leg, or tunnel-in's
// listener. Its own credentials and checks, apart from the tunnel's.
struct bridge_settings {
  tls::tls_options tls;
  tls::credential_files files;
};

struct service {
  tls::role side = tls::role::server;  // server: tunnel-out, client: tunnel-in
  // tunnel-out: the name clients select this service by (SNI, mux stream); tunnel-in: the
  // name it asks tunnel-out for. "" on the command line without --service.
  std::string name;
  net::address listen;
  net::address target;                 // tunnel-out --target / tunnel-in --connect
  tls::credential_files files;
  tls::tls_options tls;
  timeouts limits;
  udp_settings udp;
  mux_settings mux;
  std::optional<bridge_settings> bridge;  // --target-tls (tunnel-out), --listen-cert (tunnel-in)
  plain_legs plain;                    // PROXY protocol, --transparent, unix socket access
  std::size_t max_conns = 0;           // resolved at start-up when not given
  std::chrono::milliseconds reload_interval{0};  // --reload-interval: content checks (0: SIGHUP only)
  unsigned threads = 0;                // resolved at start-up when not given
  std::chrono::microseconds busy_poll{0};  // --busy-poll: a worker's look for work before sleeping
  spdlog::level::level_enum log_level = spdlog::level::info;
  ops::log_format log_format = ops::log_format::text;
  std::optional<net::address> status;  // --status: the HTTP health/metrics endpoint
  std::string user;                    // --user: drop root to this user after binding
  // Where each setting was written, for mistakes found after parsing (a certificate that
  // does not load): "--cert" -> "site.toml:12: services.pg.cert"; "" -> the service's
  // table. Empty for the command line.
  std::map<std::string, std::string> origins;
};

// What a process runs: one service from the command line, or every service of a file.
struct settings {
  std::vector<service> services;  // never empty
  std::string file;               // the config file ("" for the command line)
  const service& process() const { return services.front(); }  // the process-wide settings
};

// `message` (a one-line mistake starting with its flag, "--cert x.pem: ...") as the
// operator wrote it: on the command line unchanged; from a file as
// "site.toml:12: services.pg.cert: x.pem: ...".
std::string attribute(const service& s, const std::string& message);

}  // namespace tunnel::config
