// tunnel-in: accepts plaintext legacy connections and carries them to tunnel-out over TLS.
#include <algorithm>
#include <csignal>
#include <iostream>

#include "config/cli.hpp"
#include "config/duration.hpp"
#include "config/udp_tls_flags.hpp"
#include "net/listener.hpp"
#include "ops/log.hpp"
#include "ops/operations.hpp"
#include "ops/privileges.hpp"
#include "ops/runtime.hpp"
#include "mux_pool.hpp"
#include "mux_relay.hpp"
#include "relay.hpp"
#include "udp_relay.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"
#include "tls/credentials.hpp"

using namespace tunnel;

namespace {

// What runs for the services of the process; destroyed before the runtime, whose
// contexts the relays and pools use.
struct running {
  std::vector<std::unique_ptr<client::udp_relay>> udp;
  std::vector<std::unique_ptr<client::mux_pool>> pools;  // mux/auto mode
};

void log_listening(const config::service& svc, const net::generic_acceptor& acceptor) {
  ops::info("listening")
      .kv("listen", net::bound_address(acceptor))
      .kv("service", svc.name.empty() ? "(none)" : svc.name)
      .kv("connect", svc.target.to_string())
      .kv("server_name", svc.tls.server_name.value_or(svc.files.psk.empty() ? "(pinned key only)" : "(pre-shared key)"))
      .kv("tls_min", svc.tls.min_version == tls::version::tls1_2 ? "1.2" : "1.3")
      .kv("threads", static_cast<std::uint64_t>(svc.threads))
      .kv("busy_poll_us", static_cast<std::uint64_t>(svc.busy_poll.count()))
      .kv("max_conns", static_cast<std::uint64_t>(svc.max_conns))
      .kv("idle_timeout", config::format_duration(svc.limits.idle));
}

// Binds one TCP service and starts accepting; returns its readiness check.
// `legacy`: TLS for legacy clients (--listen-cert), or null.
// `pool`: its mux connections (null in raw mode).
// `listeners`: how many TCP services the process has (ops::listen_or_inherit).
ops::readiness_check serve_tcp(ops::runtime& rt, const config::service& svc, std::shared_ptr<tls::context_source> source,
                               std::shared_ptr<tls::context_source> legacy, client::mux_pool* pool, std::size_t listeners) {
  auto acceptor = ops::listen_or_inherit(rt.main_context(), svc.listen, svc.plain.listen_access, listeners);
  log_listening(svc, acceptor);
  // /readyz: tunnel-out reachable over TCP; with --mode mux also a mux connection up.
  ops::readiness_check ready = ops::next_hop_reachable(svc.target);
  // One snapshot per connection: a reload changes new handshakes, never live ones.
  if (svc.mux.mode == config::carry_mode::raw) {
    rt.serve(std::move(acceptor), svc.max_conns, [&svc, source, legacy](net::accepted c) {
      return client::relay_connection(svc, source->current(), legacy ? legacy->current() : nullptr, std::move(c));
    });
    return ready;
  }
  // mux: connections up from the start. auto: from the first connection that finds
  // tunnel-out speaking mux (no connection is made to a peer that may not want it).
  if (svc.mux.mode == config::carry_mode::mux) {
    pool->start();
    ready = ops::both(ready, ops::mux_pool_up);
  }
  rt.on_shutdown([pool] { pool->stop(); });
  // The pool's connections say goodbye (GOAWAY, close_notify) before the process exits,
  // so tunnel-out sees a clean close and both sides log the connection's end.
  rt.hold_shutdown_while([pool] { return pool->live_sessions() > 0; });
  rt.serve(std::move(acceptor), svc.max_conns, [&svc, source, legacy, pool](net::accepted c) {
    return client::relay_mux(svc, *pool, source->current(), legacy ? legacy->current() : nullptr, std::move(c));
  });
  return ready;
}

// The mux connections of each service (null where it has none): one pool per TCP service
// in mux or auto mode; a UDP service that may carry flows over TLS rides the pool of a TCP
// service with the same tunnel (so flows and streams share connections), or else gets one
// of its own on the main worker, where UDP flows live.
std::vector<client::mux_pool*> make_pools(ops::runtime& rt, const config::settings& cfg,
                                          const std::vector<std::shared_ptr<tls::context_source>>& sources,
                                          const std::vector<std::unique_ptr<config::service>>& tls_legs,
                                          const std::vector<std::shared_ptr<tls::context_source>>& tls_leg_sources,
                                          running& live) {
  const auto& all = cfg.services;
  std::vector<client::mux_pool*> pools(all.size(), nullptr);
  // A pool's live sessions were authenticated with the old credentials (a CA or CRL that
  // now refuses tunnel-out, say): a reload that changes them retires the sessions, whose
  // open streams finish while new ones go to fresh connections.
  const auto add_pool = [&rt, &live](const config::service& svc, std::shared_ptr<tls::context_source> source,
                                     bool main_worker_only) {
    live.pools.push_back(std::make_unique<client::mux_pool>(rt, svc, source, main_worker_only));
    client::mux_pool* pool = live.pools.back().get();
    ops::on_credentials_changed(rt, source, [pool] { pool->retire_all("credentials reloaded"); });
    return pool;
  };
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i].udp.enabled || all[i].mux.mode == config::carry_mode::raw) continue;
    pools[i] = add_pool(all[i], sources[i], false);
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!tls_legs[i]) continue;
    for (std::size_t j = 0; j < all.size() && !pools[i]; ++j)
      if (pools[j] && !all[j].udp.enabled && config::same_tunnel(all[j], *tls_legs[i])) pools[i] = pools[j];
    if (pools[i]) continue;
    pools[i] = add_pool(*tls_legs[i], tls_leg_sources[i], true);
  }
  return pools;
}

}  // namespace

int main(int argc, char** argv) {
  auto cli = config::parse_command_line(tls::role::client, argc, argv);
  if (!cli.run) return cli.exit_code;
  // Until the runtime takes SIGHUP over: a reload asked for while the credentials are first
  // loaded is moot, and must not end the process (SIGHUP's default action).
  std::signal(SIGHUP, SIG_IGN);
  const config::settings cfg = std::move(*cli.run);
  const config::service& proc = cfg.process();
  std::vector<std::shared_ptr<tls::context_source>> sources;  // per service: swapped on reload
  std::vector<std::shared_ptr<tls::context_source>> legacy;   // per service: --listen-cert, or null
  // Per service: the TLS leg of a UDP service that may carry flows over TLS, and its
  // credentials (null otherwise). Outlive the runtime, whose coroutines refer to them.
  std::vector<std::unique_ptr<config::service>> tls_legs;
  std::vector<std::shared_ptr<tls::context_source>> tls_leg_sources;
  std::vector<std::shared_ptr<tls::context_source>> reloaded;  // both of the above
  std::unique_ptr<ops::runtime> rt;
  std::unique_ptr<ops::operations> operations;  // --status, systemd, --user
  running live;  // destroyed before rt
  try {
    ops::init_logging("tunnel-in", proc.log_level, proc.log_format);
    ops::identify_metrics("tunnel-in", cfg);
    ops::keep_out_of_core_dumps();
    tls::init_library();
    for (const auto& svc : cfg.services) {
      sources.push_back(ops::load_credentials(svc, svc.tls));
      legacy.push_back(svc.bridge ? ops::load_credentials(svc, svc.bridge->tls, svc.bridge->files) : nullptr);
      const bool tls_leg = svc.udp.enabled && svc.udp.tls_target;
      tls_legs.push_back(tls_leg ? std::make_unique<config::service>(config::tls_leg_of(svc)) : nullptr);
      tls_leg_sources.push_back(tls_leg ? ops::load_credentials(svc, tls_legs.back()->tls) : nullptr);
    }
    if (cli.check_only) {  // the files loaded and matched: print what would run
      std::cout << config::describe(cfg);
      return 0;
    }
    rt = std::make_unique<ops::runtime>(proc.threads, proc.limits.shutdown, proc.busy_poll);
    rt->limit_process(config::default_max_conns(proc.threads));  // several services share the descriptors
    reloaded = sources;
    reloaded.insert(reloaded.end(), legacy.begin(), legacy.end());
    reloaded.insert(reloaded.end(), tls_leg_sources.begin(), tls_leg_sources.end());
    ops::maintain_credentials(*rt, cfg, reloaded);
    std::vector<ops::readiness_check> checks;
    const auto pools = make_pools(*rt, cfg, sources, tls_legs, tls_leg_sources, live);
    const auto tcp_services = static_cast<std::size_t>(
        std::count_if(cfg.services.begin(), cfg.services.end(), [](const auto& svc) { return !svc.udp.enabled; }));
    for (std::size_t i = 0; i < cfg.services.size(); ++i) {
      const config::service& svc = cfg.services[i];
      if (svc.udp.enabled) {
        live.udp.push_back(client::serve_udp(*rt, svc, sources[i], {tls_legs[i].get(), tls_leg_sources[i], pools[i]}));
        // Over TLS: ready once a connection to tunnel-out's TLS port is up.
        if (svc.udp.over_tls) checks.push_back(ops::both(ops::next_hop_reachable(svc.target), ops::mux_pool_up));
      } else {
        checks.push_back(serve_tcp(*rt, svc, sources[i], legacy[i], pools[i], tcp_services));
      }
    }
    ops::check_passed_sockets_taken();
    ops::readiness_check ready;
    if (!checks.empty()) ready = ops::all_of(std::move(checks));
    operations = std::make_unique<ops::operations>(*rt, proc, ready);
  } catch (const std::exception& e) {
    std::cerr << "tunnel-in: error: " << e.what() << "\n";
    return 2;
  }
  return rt->run();
}
