// tunnel-out: accepts mutually authenticated TLS and relays to a plaintext legacy server.
#include <iostream>

#include "config/cli.hpp"
#include "config/duration.hpp"
#include "net/listener.hpp"
#include "ops/log.hpp"
#include "ops/operations.hpp"
#include "ops/runtime.hpp"
#include "mux_server.hpp"
#include "relay.hpp"
#include "udp_relay.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"
#include "tls/credentials.hpp"

using namespace tunnel;

int main(int argc, char** argv) {
  auto cli = config::parse_command_line(tls::role::server, argc, argv);
  if (!cli.svc) return cli.exit_code;
  const config::service svc = std::move(*cli.svc);
  std::shared_ptr<tls::context_source> source;  // the current credentials, swapped on reload
  std::unique_ptr<server::mux_host> mux;  // destroyed after rt: posted work refers to it
  std::unique_ptr<ops::runtime> rt;
  std::unique_ptr<ops::operations> operations;  // --status, systemd, --user
  std::unique_ptr<server::udp_relay> udp;  // destroyed before rt, whose context it uses
  try {
    ops::init_logging("tunnel-out", svc.log_level, svc.log_format);
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
      udp = server::serve_udp(*rt, svc, source);
    } else {
      auto acceptor = ops::listen_or_inherit(rt->main_context(), svc.listen);
      ops::info("listening")
          .kv("listen", net::bound_address(acceptor))
          .kv("target", svc.target.to_string())
          .kv("tls_min", svc.tls.min_version == tls::version::tls1_2 ? "1.2" : "1.3")
          .kv("threads", static_cast<std::uint64_t>(svc.threads))
          .kv("max_conns", static_cast<std::uint64_t>(svc.max_conns))
          .kv("idle_timeout", config::format_duration(svc.limits.idle));
      if (svc.tls.allow.empty() && svc.files.psk.empty())
        ops::warn("no allow-list given: every client certificate issued by --ca is admitted");
      // One snapshot per connection: a reload changes new handshakes, never live ones.
      mux = std::make_unique<server::mux_host>(svc, source);
      rt->on_shutdown([m = mux.get()] { m->drain(); });
      // Live mux sessions were authenticated with the old CA/CRL: retire them, so a peer
      // revoked by the reload cannot open new streams on a session it already holds.
      rt->on_reload([source, m = mux.get(), seen = source->current()](bool) mutable {
        if (source->current() == seen) return;
        seen = source->current();
        m->retire_all("credentials reloaded");
      });
      rt->serve(std::move(acceptor), svc.max_conns, [&svc, source, m = mux.get()](net::generic_socket s) {
        return server::relay_connection(svc, source->current(), std::move(s), m);
      });
    }
    operations = std::make_unique<ops::operations>(*rt, svc, ops::readiness_check{});
  } catch (const std::exception& e) {
    std::cerr << "tunnel-out: error: " << e.what() << "\n";
    return 2;
  }
  return rt->run();
}
