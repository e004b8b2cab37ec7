// tunnel-out: accepts mutually authenticated TLS and relays to plaintext legacy servers.
#include <csignal>
#include <iostream>
#include <map>
#include <stdexcept>
#include <vector>

#include "config/cli.hpp"
#include "config/duration.hpp"
#include "net/listener.hpp"
#include "net/udp_socket.hpp"
#include "ops/log.hpp"
#include "ops/operations.hpp"
#include "ops/privileges.hpp"
#include "ops/runtime.hpp"
#include "mux_server.hpp"
#include "port.hpp"
#include "relay.hpp"
#include "udp_relay.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"
#include "tls/credentials.hpp"

using namespace tunnel;

namespace {

void log_listening(const server::port& p, const net::generic_acceptor& acceptor) {
  for (const auto* svc : p.services) {
    ops::info("listening")
        .kv("listen", net::bound_address(acceptor))
        .kv("service", svc->name.empty() ? "(any)" : svc->name)
        .kv("target", svc->target.to_string())
        .kv("transport", svc->udp.enabled ? "udp over tls" : "tcp")
        .kv("tls_min", svc->tls.min_version == tls::version::tls1_2 ? "1.2" : "1.3")
        .kv("threads", static_cast<std::uint64_t>(svc->threads))
        .kv("busy_poll_us", static_cast<std::uint64_t>(svc->busy_poll.count()))
        .kv("max_conns", static_cast<std::uint64_t>(svc->max_conns))
        .kv("idle_timeout", config::format_duration(svc->limits.idle));
    // A UDP service's DTLS listener warns about it already.
    if (!svc->udp.enabled && svc->tls.routes.front().allow.empty() && svc->files.psk.empty())
      ops::warn("no allow-list given: every client certificate issued by --ca is admitted")
          .kv("service", svc->name.empty() ? "(any)" : svc->name);
  }
}

std::uint16_t bound_port(const net::generic_acceptor& acceptor) {
  std::string why;
  const auto a = net::parse_address(net::bound_address(acceptor), why, true);
  return a ? a->port : 0;
}

// The UDP services that take their TLS port's number: on port 0, a service whose flows also
// come over TLS on the same address is served over UDP and TCP on one host:port.
std::vector<const config::service*> udp_on_tls_port(const config::settings& cfg, const server::port& p) {
  std::vector<const config::service*> out;
  for (const auto& svc : cfg.services)
    if (svc.udp.enabled && svc.udp.over_tls && svc.listen.port == 0 &&
        svc.udp.tls_listen->to_string() == svc.listen.to_string() && svc.listen.to_string() == p.address().to_string())
      out.push_back(&svc);
  return out;
}

// Binds a TLS port and the UDP sockets that take its number. When another program holds
// that number for UDP, both are given back and the kernel asked for another.
net::generic_acceptor bind_tls_port(asio::io_context& io, const server::port& p,
                                    const std::vector<const config::service*>& same_number,
                                    std::map<const config::service*, net::udp::socket>& udp_sockets,
                                    std::size_t listeners) {
  constexpr int attempts = 64;
  for (int attempt = 1;; ++attempt) {
    auto acceptor = ops::listen_or_inherit(io, p.address(), {}, listeners);
    const std::uint16_t number = bound_port(acceptor);
    std::error_code ec;
    for (const auto* svc : same_number) {
      net::address at = svc->listen;
      at.port = number;
      net::udp::socket s(io);
      if ((ec = net::bind_udp(s, net::resolve_udp(io, at)))) {
        // (A port systemd passed cannot be swapped for another: no retry then.)
        if (ec != asio::error::address_in_use || attempt == attempts || ops::inherited(acceptor))
          throw std::runtime_error("cannot listen on " + at.to_string() + " (udp): " + ec.message());
        ops::debug("port number taken for UDP; asking for another").kv("listen", at.to_string());
        break;
      }
      udp_sockets.insert_or_assign(svc, std::move(s));
    }
    if (!ec) return acceptor;
    for (const auto* svc : same_number) udp_sockets.erase(svc);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto cli = config::parse_command_line(tls::role::server, argc, argv);
  if (!cli.run) return cli.exit_code;
  // Until the runtime takes SIGHUP over: a reload asked for while the credentials are first
  // loaded is moot, and must not end the process (SIGHUP's default action).
  std::signal(SIGHUP, SIG_IGN);
  const config::settings cfg = std::move(*cli.run);
  const config::service& proc = cfg.process();
  std::vector<server::port> ports = server::group_ports(cfg);
  std::vector<std::shared_ptr<tls::context_source>> sources;  // one per port, then per UDP service
  std::vector<std::shared_ptr<tls::context_source>> reloaded;  // those and the target legs'
  std::vector<std::unique_ptr<server::mux_host>> muxes;  // destroyed after rt: posted work refers to them
  std::unique_ptr<ops::runtime> rt;
  std::unique_ptr<ops::operations> operations;  // --status, systemd, --user
  std::vector<std::unique_ptr<server::udp_relay>> udp;  // destroyed before rt, whose context they use
  try {
    ops::init_logging("tunnel-out", proc.log_level, proc.log_format);
    ops::identify_metrics("tunnel-out", cfg);
    ops::keep_out_of_core_dumps();
    tls::init_library();
    for (const auto& p : ports) sources.push_back(ops::load_credentials(p.first(), p.tls()));
    for (const auto& svc : cfg.services)
      if (svc.udp.enabled) sources.push_back(ops::load_credentials(svc, svc.tls));
    reloaded = sources;
    for (auto& p : ports)  // --target-tls: each service's target leg has credentials of its own
      for (const auto* svc : p.services) {
        p.target_tls.push_back(svc->bridge ? ops::load_credentials(*svc, svc->bridge->tls, svc->bridge->files) : nullptr);
        reloaded.push_back(p.target_tls.back());
      }
    if (cli.check_only) {  // the files loaded and matched: print what would run
      std::cout << config::describe(cfg);
      return 0;
    }
    rt = std::make_unique<ops::runtime>(proc.threads, proc.limits.shutdown, proc.busy_poll);
    rt->limit_process(config::default_max_conns(proc.threads));  // several services share the descriptors
    ops::maintain_credentials(*rt, cfg, reloaded);
    // One flow bound per UDP service, shared by its DTLS flows and its flows over TLS.
    std::map<const config::service*, std::shared_ptr<server::flow_budget>> budgets;
    for (const auto& svc : cfg.services)
      if (svc.udp.enabled) budgets[&svc] = std::make_shared<server::flow_budget>(svc.udp.max_flows);
    // TLS ports first, with the UDP sockets that take their port numbers.
    std::map<const config::service*, net::udp::socket> udp_sockets;
    for (std::size_t i = 0; i < ports.size(); ++i) {
      server::port& p = ports[i];
      const auto source = sources[i];
      for (const auto* svc : p.services)
        p.udp.push_back(svc->udp.enabled ? std::make_shared<server::udp_route>(server::udp_route{budgets[svc]})
                                         : nullptr);
      auto acceptor = bind_tls_port(rt->main_context(), p, udp_on_tls_port(cfg, p), udp_sockets, ports.size());
      log_listening(p, acceptor);
      muxes.push_back(std::make_unique<server::mux_host>(p, source, rt->budget()));
      server::mux_host* mux = muxes.back().get();
      rt->on_shutdown([mux] { mux->drain(); });
      // Live mux sessions were authenticated with the old CA/CRL: retire them, so a peer
      // revoked by the reload cannot open new streams on a session it already holds.
      ops::on_credentials_changed(*rt, source, [mux] { mux->retire_all("credentials reloaded"); });
      // One snapshot per connection: a reload changes new handshakes, never live ones.
      rt->serve(std::move(acceptor), p.first().max_conns, [&p, source, mux](net::accepted c) {
        return server::relay_connection(p, source->current(), std::move(c), mux);
      });
    }
    ops::check_passed_sockets_taken();
    std::size_t next_source = ports.size();
    for (const auto& svc : cfg.services) {
      if (!svc.udp.enabled) continue;
      const auto taken = udp_sockets.find(&svc);
      auto socket = taken != udp_sockets.end() ? std::move(taken->second) : net::bind_udp(rt->main_context(), svc.listen);
      udp.push_back(server::serve_udp(*rt, svc, std::move(socket), sources[next_source++], budgets[&svc]));
    }
    operations = std::make_unique<ops::operations>(*rt, proc, ops::readiness_check{});
  } catch (const std::exception& e) {
    std::cerr << "tunnel-out: error: " << e.what() << "\n";
    return 2;
  }
  return rt->run();
}
