#pragma once
// The flags of one service, shared by the command line and the config file (whose keys are
// the flag names without "--"): registered on a CLI11 app, then validated into a service.
// One definition of what each setting means, whichever way it was written.
#include <CLI/CLI.hpp>
#include <stdexcept>
#include <optional>
#include <string>
#include <vector>

#include "config/bridge_flags.hpp"
#include "config/mux_flags.hpp"
#include "config/plain_leg_flags.hpp"
#include "config/service.hpp"
#include "config/trust_flags.hpp"
#include "config/udp_tls_flags.hpp"

namespace tunnel::config {

struct raw_flags {
  std::string config;  // --config FILE (command line only)
  std::string service;  // --service NAME
  std::string listen, target, cert, key, ca, server_name, tls_min = "1.3";
  std::vector<std::string> allow_cn, allow_dns, allow_uri, allow_ip, allow_spki, pins;
  std::string connect_timeout = "10s", handshake_timeout = "10s", idle_timeout = "1h",
              close_timeout = "60s", shutdown_timeout = "30s", max_lifetime = "0";
  std::optional<long long> max_conns;  // unset: from the open-file limit
  std::optional<long long> threads;    // unset: one per core
  long long busy_poll = 0;  // microseconds
  std::string log_level = "info", log_format = "text";
  std::string status, user;
  bool check_config = false;
  // UDP mode; unset / "" mean "not given", so that using them without --udp is an error.
  bool udp = false;
  std::optional<long long> mtu, max_flows;
  std::string flow_idle_timeout;
  trust_flags trust;  // --crl, --psk-file, --reload-interval, --expiry-warning
  mux_flags mux;      // --mode, --pool, --keepalive, --rotate-after
  bridge_flags bridge;  // --target-tls..., --listen-cert...
  plain_leg_flags plain;  // --proxy-protocol, --transparent, --accept-proxy-protocol, --socket-*
  udp_tls_flags udp_tls;  // --udp-over-tls, --tls-fallback, --dtls-retry, --tls-listen
};

// A mistake in the settings. The message starts with the flag it is about ("--mtu 9: ...").
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Registers every flag of `side` on `app`; `f` must outlive parsing. --listen and
// --target/--connect are checked by validate(), not by CLI11, so --config can stand alone.
void add_flags(CLI::App& app, raw_flags& f, tls::role side);

// Turns parsed flags into a service. Throws usage_error. Opens no file.
service validate(tls::role side, const raw_flags& f);

}  // namespace tunnel::config
