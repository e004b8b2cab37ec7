#pragma once
// The operator-facing parts wired around a runtime once its listeners are bound:
// the --status endpoint, systemd notifications (READY, RELOADING, STOPPING, watchdog)
// and the --user privilege drop.
#include <memory>

#include "config/service.hpp"
#include "net/listener.hpp"
#include "ops/runtime.hpp"
#include "ops/status_server.hpp"
#include "tls/context_source.hpp"

namespace tunnel::ops {

// Binds --listen, or takes the socket systemd passed (socket activation, $LISTEN_FDS)
// for it: the one bound to `at` (same Unix path; same port, and the same address unless
// `at`'s host is a name or a wildcard), or, when the process has one listener (`listeners`)
// and systemd passed one socket, that one whatever its address. Throws std::runtime_error
// like net::listen_on. `access` applies to a Unix socket we bind ourselves; an inherited
// one is the .socket unit's business.
net::generic_acceptor listen_or_inherit(asio::io_context& io, const net::address& at,
                                        const net::unix_socket_access& access, std::size_t listeners);
// Whether `acceptor` is a socket systemd passed (its address cannot be chosen again).
bool inherited(net::generic_acceptor& acceptor);
// After every listener: throws std::runtime_error naming a passed socket none took (it
// would sit unserved while clients connect to it).
void check_passed_sockets_taken();

// Labels the metrics with the program and its service: the one service's name ("default"
// without --service), or "all" when the process runs several (the counters are the
// process's, not a service's).
void identify_metrics(const char* program, const config::settings& cfg);

// Readiness of the next hop, for /readyz on tunnel-in: a TCP connect to `to`, at most one
// probe per second (results are cached, one cache per address however many services name
// it), bounded by 2 s, and never two at once (probes that arrive during a dial wait for
// its verdict). "" when reachable. Call on the main thread at set-up.
readiness_check next_hop_reachable(const net::address& to);

// Every check at once (each may dial for up to 2 s: the answer takes the slowest, not the
// sum); the first in `checks` order that gives a reason wins.
readiness_check all_of(std::vector<readiness_check> checks);

// `base`, then `also` (a synchronous check, "" when fine): the first reason wins.
readiness_check both(readiness_check base, std::function<std::string()> also);

// For tunnel-in in mux mode: ready once at least one mux connection has been answered.
std::string mux_pool_up();

// Loads a service's credentials (or its TLS bridge's, with `files`) into a context source.
// A bad file is reported where the operator named it (config::attribute). Throws
// std::runtime_error.
std::shared_ptr<tls::context_source> load_credentials(const config::service& svc, tls::tls_options options);
std::shared_ptr<tls::context_source> load_credentials(const config::service& svc, tls::tls_options options,
                                                      const tls::credential_files& files);

// Reloads every source (null ones skipped) on SIGHUP and every process().reload_interval,
// and every few seconds erases the resumption secrets of each source's current context
// that have expired (tls_context::forget_expired), so that they do not stay in memory
// while the process sees no handshakes. `sources` must outlive `rt`'s loops and be complete
// before the first reload.
void maintain_credentials(runtime& rt, const config::settings& cfg,
                          const std::vector<std::shared_ptr<tls::context_source>>& sources);

// Runs `action` after each reload that swapped `source`'s credentials (registered after
// maintain_credentials, so it sees the new ones): e.g. retiring mux sessions authenticated
// with the old CA or CRL.
void on_credentials_changed(runtime& rt, std::shared_ptr<tls::context_source> source, std::function<void()> action);

class operations {
 public:
  // Starts the status endpoint (if --status), drops privileges (if --user), arms the
  // systemd watchdog and says READY=1. Call after every listener is bound, before
  // rt.run(). `extra` adds role-specific readiness (may be empty).
  // Throws std::runtime_error (status address in use, unknown user, ...).
  operations(runtime& rt, const config::service& svc, readiness_check extra);

 private:
  asio::awaitable<void> watchdog_loop(std::chrono::microseconds interval);
  asio::awaitable<std::string> ready();

  runtime& rt_;
  readiness_check extra_;
  std::unique_ptr<status_server> status_;
};

}  // namespace tunnel::ops
