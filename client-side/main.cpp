// tunnel-in: accepts plaintext legacy connections and carries them to tunnel-out over TLS.
#include <iostream>

#include "config/cli.hpp"
#include "config/duration.hpp"
#include "net/listener.hpp"
#include "ops/log.hpp"
#include "ops/operations.hpp"
#include "ops/runtime.hpp"
#include "mux_pool.hpp"
#include "mux_relay.hpp"
#include "relay.hpp"
#include "udp_relay.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"
#include "tls/credentials.hpp"

using namespace tunnel;

int main(int argc, char** argv) {
  auto cli = config::parse_command_line(tls::role::client, argc, argv);
  if (!cli.svc) return cli.exit_code;
  const config::service svc = std::move(*cli.svc);
  std::shared_ptr<tls::context_source> source;  // the current credentials, swapped on reload
  std::unique_ptr<ops::runtime> rt;
  std::unique_ptr<ops::operations> operations;  // --status, systemd, --user
  std::unique_ptr<client::udp_relay> udp;  // destroyed before rt, whose context it uses
  std::unique_ptr<client::mux_pool> pool;  // mux/auto mode; destroyed before rt
  try {
    ops::init_logging("tunnel-in", svc.log_level, svc.log_format);
    tls::init_library();
    source = std::make_shared<tls::context_source>(svc.tls, svc.files);
    if (cli.check_only) {  // the files loaded and matched: print what would run
      std::cout << config::describe(svc);
      return 0;
    }
    rt = std::make_unique<ops::runtime>(svc.threads, svc.limits.shutdown);
    rt->on_reload([source](bool periodic) {
      source->reload(periodic ? tls::reload_trigger::interval : tls::reload_trigger::signal);
    });
    rt->reload_every(svc.reload_interval);
    if (svc.udp.enabled) {
      udp = client::serve_udp(*rt, svc, source);
    } else {
      auto acceptor = ops::listen_or_inherit(rt->main_context(), svc.listen, svc.plain.listen_access);
      ops::info("listening")
          .kv("listen", net::bound_address(acceptor))
          .kv("connect", svc.target.to_string())
          .kv("server_name", svc.tls.server_name.value_or(svc.files.psk.empty() ? "(pinned key only)" : "(pre-shared key)"))
          .kv("tls_min", svc.tls.min_version == tls::version::tls1_2 ? "1.2" : "1.3")
          .kv("threads", static_cast<std::uint64_t>(svc.threads))
          .kv("max_conns", static_cast<std::uint64_t>(svc.max_conns))
          .kv("idle_timeout", config::format_duration(svc.limits.idle));
      // One snapshot per connection: a reload changes new handshakes, never live ones.
      if (svc.mux.mode == config::carry_mode::raw) {
        rt->serve(std::move(acceptor), svc.max_conns, [&svc, source](net::generic_socket s) {
          return client::relay_connection(svc, source->current(), std::move(s));
        });
      } else {
        pool = std::make_unique<client::mux_pool>(*rt, svc, source);
        // mux: connections up from the start. auto: from the first connection that finds
        // tunnel-out speaking mux (no connection is made to a peer that may not want it).
        if (svc.mux.mode == config::carry_mode::mux) pool->start();
        rt->on_shutdown([p = pool.get()] { p->stop(); });
        rt->serve(std::move(acceptor), svc.max_conns, [&svc, source, p = pool.get()](net::generic_socket s) {
          return client::relay_mux(svc, *p, source->current(), std::move(s));
        });
      }
    }
    // /readyz: tunnel-out reachable over TCP; with --mode mux also a mux connection up.
    ops::readiness_check ready;
    if (!svc.udp.enabled) ready = ops::next_hop_reachable(svc.target);
    if (!svc.udp.enabled && svc.mux.mode == config::carry_mode::mux) ready = ops::both(ready, ops::mux_pool_up);
    operations = std::make_unique<ops::operations>(*rt, svc, ready);
  } catch (const std::exception& e) {
    std::cerr << "tunnel-in: error: " << e.what() << "\n";
    return 2;
  }
  return rt->run();
}
