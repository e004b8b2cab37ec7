#include "ops/operations.hpp"

#include <sys/socket.h>
#include <time.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <vector>

#include "net/dial.hpp"
#include "net/off_loop.hpp"
#include "net/proxy_endpoint.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "ops/privileges.hpp"
#include "ops/systemd.hpp"
#include "proxy/ip_endpoint.hpp"

namespace tunnel::ops {
namespace {
constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using namespace std::chrono_literals;
// How late an expired ticket key or cached session may be erased in an idle process.
constexpr std::chrono::milliseconds secret_sweep_interval = 5s;

// A listening socket systemd passed, and whether a listener has taken it.
struct passed_socket {
  int fd = -1;
  net::generic_endpoint address;
  bool known = false;  // getsockname worked
  bool taken = false;
};

std::vector<passed_socket>& passed_sockets() {
  static std::vector<passed_socket> all = [] {
    std::vector<passed_socket> out;
    for (const int fd : systemd::inherited_listeners()) {
      passed_socket p;
      p.fd = fd;
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        p.address = net::generic_endpoint(&ss, len);
        p.known = true;
      }
      out.push_back(p);
    }
    return out;
  }();
  return all;
}

// How well a passed socket fits `at`: exactly (the same Unix path; the same port and IP
// address), loosely (the same port, `at`'s host a name or a wildcard: systemd's
// ListenStream= decides the address), or not at all.
enum class fit { none, loose, exact };

fit fit_of(const passed_socket& p, const net::address& at) {
  if (!p.known) return fit::none;
  if (at.is_unix()) return net::describe(p.address) == at.to_string() ? fit::exact : fit::none;
  const auto bound = net::to_ip_endpoint(p.address);
  if (!bound || bound->port != at.port) return fit::none;
  const auto literal = proxy::parse_ip(at.host, at.host.find(':') != std::string::npos);
  if (!literal) return fit::loose;
  if (std::all_of(literal->ip.begin(), literal->ip.end(), [](std::uint8_t b) { return b == 0; })) return fit::loose;
  const auto a = proxy::unmapped(*literal), b = proxy::unmapped(*bound);
  return a.v6 == b.v6 && a.ip == b.ip ? fit::exact : fit::none;
}

// The passed socket for `at`: an exact fit, else the one loose fit (several: which one the
// operator meant cannot be told, so start-up stops), else none.
passed_socket* socket_for(std::vector<passed_socket>& passed, const net::address& at) {
  passed_socket* loose = nullptr;
  std::size_t loose_count = 0;
  for (auto& p : passed) {
    if (p.taken) continue;
    const fit f = fit_of(p, at);
    if (f == fit::exact) return &p;
    if (f == fit::loose && loose_count++ == 0) loose = &p;
  }
  if (loose_count > 1)
    throw std::runtime_error("socket activation: several passed sockets have the port of --listen " + at.to_string() +
                             ": give its IP address to tell which one it is");
  return loose;
}

}  // namespace

net::generic_acceptor listen_or_inherit(asio::io_context& io, const net::address& at,
                                        const net::unix_socket_access& access, std::size_t listeners) {
  auto& passed = passed_sockets();
  passed_socket* chosen = socket_for(passed, at);
  // One listener and one socket: it is served whatever --listen says (the .socket unit's
  // ListenStream= is what the operator configured). With several, each takes its own.
  if (!chosen && listeners == 1 && passed.size() == 1 && !passed.front().taken) chosen = &passed.front();
  if (!chosen) return net::listen_on(io, at, access);
  chosen->taken = true;
  const int fd = chosen->fd;
  const std::string which = "socket activation: descriptor " + std::to_string(fd);
  if (!access.empty())
    warn("--socket-mode/--socket-owner do not apply to a socket passed by systemd: set SocketMode=, "
         "SocketUser= and SocketGroup= in the .socket unit");
  if (!chosen->known) throw std::runtime_error(which + " is not a socket");
  // Only a listening stream socket can be served; anything else (a UDP socket, one never
  // put in listening state, an Accept=yes connection) would fail every accept() for good
  // while the process reported itself ready.
  const auto option = [&](int name) {
    int value = -1;
    socklen_t size = sizeof value;
    return ::getsockopt(fd, SOL_SOCKET, name, &value, &size) == 0 ? value : -1;
  };
  if (option(SO_TYPE) != SOCK_STREAM)
    throw std::runtime_error(which + " is not a stream socket (ListenStream= in the .socket unit)");
  if (option(SO_ACCEPTCONN) != 1) throw std::runtime_error(which + " is not listening (Accept=no in the .socket unit)");
  const int family = chosen->address.protocol().family();
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    throw std::runtime_error(which + " is not an IPv4, IPv6 or Unix socket");
  const int protocol = family == AF_UNIX ? 0 : IPPROTO_TCP;
  if (protocol == IPPROTO_TCP) net::set_low_latency(fd);  // inherited by what it accepts
  net::generic_acceptor acceptor(io, asio::generic::stream_protocol(family, protocol), fd);
  info("using the listening socket passed by systemd instead of binding --listen")
      .kv("listen", at.to_string())
      .kv("inherited", net::bound_address(acceptor));
  return acceptor;
}

bool inherited(net::generic_acceptor& acceptor) {
  for (const auto& p : passed_sockets())
    if (p.taken && p.fd == acceptor.native_handle()) return true;
  return false;
}

void check_passed_sockets_taken() {
  for (const auto& p : passed_sockets())
    if (!p.taken)
      throw std::runtime_error("socket activation: descriptor " + std::to_string(p.fd) + " (" +
                               (p.known ? net::describe(p.address) : std::string("not a socket")) +
                               ") matches no --listen address: name it in a service's listen, or drop it from the .socket unit");
}

void identify_metrics(const char* program, const config::settings& cfg) {
  std::string service = "all";
  if (cfg.services.size() == 1) service = cfg.services.front().name.empty() ? "default" : cfg.services.front().name;
  metrics::get().set_identity(program, service);
}

std::shared_ptr<tls::context_source> load_credentials(const config::service& svc, tls::tls_options options) {
  return load_credentials(svc, std::move(options), svc.files);
}

std::shared_ptr<tls::context_source> load_credentials(const config::service& svc, tls::tls_options options,
                                                      const tls::credential_files& files) {
  try {
    return std::make_shared<tls::context_source>(std::move(options), files);
  } catch (const tls::credential_error& e) {
    throw std::runtime_error(config::attribute(svc, e.what()));
  }
}

namespace {

// One reload of every source: the files read and the contexts built on a thread of its own
// (a hung network mount must not stall this loop: UDP flows, the status endpoint and
// SIGTERM run on it), then installed here.
asio::awaitable<void> reload_sources(std::vector<std::shared_ptr<tls::context_source>> sources, bool periodic) {
  const auto why = periodic ? tls::reload_trigger::interval : tls::reload_trigger::signal;
  auto built = std::make_shared<std::vector<tls::context_source::prepared>>(sources.size());
  for (auto& b : *built) b.failure = "no thread could be started to read the files";
  // (When no thread could be started, each source reports the failure set above.) Named,
  // not converted inside the co_await: GCC 12 destroyed that temporary std::function's
  // captures twice.
  std::function<void()> work = [sources, built, why] {
    for (std::size_t i = 0; i < sources.size(); ++i)
      if (sources[i]) (*built)[i] = sources[i]->prepare(why);
  };
  co_await net::run_off_loop(std::move(work));
  for (std::size_t i = 0; i < sources.size(); ++i)
    if (sources[i]) sources[i]->install(std::move((*built)[i]), why);
}

// After a reload: `action` when `source` has a new context since the last look.
struct change_watch {
  std::shared_ptr<tls::context_source> source;
  std::function<void()> action;
  std::shared_ptr<const tls::tls_context> seen;
};

asio::awaitable<void> act_on_change(std::shared_ptr<change_watch> w) {
  if (w->source->current() == w->seen) co_return;
  w->seen = w->source->current();
  w->action();
}

}  // namespace

void maintain_credentials(runtime& rt, const config::settings& cfg,
                          const std::vector<std::shared_ptr<tls::context_source>>& sources) {
  rt.on_reload([&sources](bool periodic) { return reload_sources(sources, periodic); });
  rt.reload_every(cfg.process().reload_interval);
  // A context a reload replaced has erased its secrets at the reload (tls_context::retire).
  rt.every(secret_sweep_interval, [&sources] {
    std::size_t erased = 0;
    for (const auto& source : sources)
      if (source) erased += source->current()->forget_expired();
    if (erased) debug("expired resumption secrets erased").kv("count", static_cast<std::uint64_t>(erased));
  });
}

void on_credentials_changed(runtime& rt, std::shared_ptr<tls::context_source> source, std::function<void()> action) {
  auto w = std::make_shared<change_watch>(change_watch{source, std::move(action), source->current()});
  rt.on_reload([w](bool) { return act_on_change(w); });
}

namespace {

struct reachability_cache {
  std::chrono::steady_clock::time_point checked{};
  std::string verdict = "not checked yet";
  // Set while a dial is under way: probes that arrive meanwhile wait for its verdict instead
  // of each dialling too (a dial to a silent host takes the full 2 s, and probes keep coming).
  std::shared_ptr<asio::steady_timer> probing;
};

// A free coroutine, not a capturing coroutine lambda: GCC 12 mishandles the latter.
asio::awaitable<std::string> probe(net::address to, std::shared_ptr<reachability_cache> cache) {
  // Probes run on the main context only, so the cache needs no lock.
  if (std::chrono::steady_clock::now() - cache->checked < 1s) co_return cache->verdict;
  if (auto under_way = cache->probing) {
    co_await under_way->async_wait(as_result);  // woken by cancel() when the dial is over
    co_return cache->verdict;
  }
  auto under_way = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor,
                                                        asio::steady_timer::time_point::max());
  cache->probing = under_way;
  // However the dial ends (cancelled with its /readyz, or by an exception), the probes
  // waiting for it are let go and the next one dials again.
  struct release {
    reachability_cache& c;
    std::shared_ptr<asio::steady_timer> t;
    ~release() {
      c.probing.reset();
      t->cancel();
    }
  } released{*cache, under_way};
  auto dialed = co_await net::dial(to, 2s);
  // Cut short (its /readyz ran out of time): no verdict, the next probe dials again.
  if (dialed.ec == asio::error::operation_aborted) co_return cache->verdict;
  cache->checked = std::chrono::steady_clock::now();
  cache->verdict = dialed.ec ? "tunnel-out " + to.to_string() + " unreachable: " + dialed.reason() : "";
  std::error_code ignored;
  dialed.socket.close(ignored);
  co_return cache->verdict;
}

asio::awaitable<std::string> both_checks(readiness_check base, std::function<std::string()> also) {
  std::string why;
  if (base) why = co_await base();
  if (why.empty() && also) why = also();
  co_return why;
}

}  // namespace

readiness_check both(readiness_check base, std::function<std::string()> also) {
  return [base, also] { return both_checks(base, also); };
}

std::string mux_pool_up() {
  return metrics::get().mux_sessions_ready.load(std::memory_order_relaxed) > 0
             ? std::string()
             : std::string("no mux connection to tunnel-out is up yet");
}

readiness_check next_hop_reachable(const net::address& to) {
  static std::map<std::string, std::shared_ptr<reachability_cache>> by_address;  // set-up only
  auto& cache = by_address[to.to_string()];
  if (!cache) cache = std::make_shared<reachability_cache>();
  return [to, cache = cache] { return probe(to, cache); };
}

namespace {
// The verdicts of all_of's checks, filled in as each ends.
struct verdicts {
  explicit verdicts(const asio::any_io_executor& ex, std::size_t n)
      : why(n), left(n), done(ex, asio::steady_timer::time_point::max()) {}
  std::vector<std::string> why;
  std::size_t left;
  asio::steady_timer done;  // cancelled when the last check ends
};

asio::awaitable<void> run_check(readiness_check check, std::shared_ptr<verdicts> v, std::size_t i) {
  v->why[i] = co_await check();
  if (--v->left == 0) v->done.cancel();
}

asio::awaitable<std::string> all_checks(std::vector<readiness_check> checks) {
  const auto ex = co_await asio::this_coro::executor;
  auto v = std::make_shared<verdicts>(ex, checks.size());
  // Spawned on their own: cut short by the caller's limit, the dials still end (each within
  // its 2 s) and fill in the cache for the next probe.
  for (std::size_t i = 0; i < checks.size(); ++i) asio::co_spawn(ex, run_check(checks[i], v, i), asio::detached);
  if (v->left > 0) co_await v->done.async_wait(as_result);
  for (const auto& why : v->why)
    if (!why.empty()) co_return why;
  if (v->left > 0) co_return std::string("readiness checks still under way");
  co_return std::string();
}
}  // namespace

readiness_check all_of(std::vector<readiness_check> checks) {
  return [checks = std::move(checks)] { return all_checks(checks); };
}

namespace {

// The end of a reload the manager asked for (the runtime said RELOADING=1 at its start):
// READY=1, with STATUS saying whether it worked (a failed one keeps the old credentials).
// The credential hooks, registered first, have finished by now.
asio::awaitable<void> tell_the_service_manager(std::shared_ptr<std::uint64_t> failures_seen, bool periodic) {
  const auto failures = metrics::get().reload_failures.load(std::memory_order_relaxed);
  const bool failed = failures != *failures_seen;
  *failures_seen = failures;
  if (periodic) co_return;  // a timed content check is not a reload the manager asked for
  systemd::notify(failed ? "READY=1\nSTATUS=credential reload failed; old credentials kept (see the log)"
                         : "READY=1\nSTATUS=credentials reloaded");
}

}  // namespace

operations::operations(runtime& rt, const config::service& svc, readiness_check extra)
    : rt_(rt), extra_(std::move(extra)) {
  if (svc.status) {
    status_ = std::make_unique<status_server>(rt.main_context(), *svc.status, [this] { return ready(); });
    status_->start();
    info("status endpoint listening").kv("status", status_->bound());
    // Left open through the drain (it ends with the event loops): /readyz says 503 then,
    // and /healthz still answers while connections finish.
  }
  if (!svc.user.empty()) {
    drop_privileges(svc.user);
    info("dropped privileges").kv("user", svc.user);
  }
  rt.on_shutdown([] { systemd::notify("STOPPING=1"); });
  rt.on_reload([failures_seen = std::make_shared<std::uint64_t>(metrics::get().reload_failures.load())](bool periodic) {
    return tell_the_service_manager(failures_seen, periodic);
  });
  if (auto interval = systemd::watchdog_interval())
    asio::co_spawn(rt.main_context(), watchdog_loop(*interval), asio::detached);
  systemd::notify("READY=1\nSTATUS=serving");
}

asio::awaitable<std::string> operations::ready() {
  if (rt_.stopping()) co_return "shutting down";
  std::string why;
  if (extra_) why = co_await extra_();
  co_return why;
}

asio::awaitable<void> operations::watchdog_loop(std::chrono::microseconds interval) {
  // Ping only when every worker's event loop has run a posted task since the last ping:
  // a wedged worker must let systemd's watchdog fire, not be papered over by thread 0.
  auto workers = rt_.worker_contexts();
  auto answered = std::make_shared<std::atomic<std::size_t>>(workers.size());
  asio::steady_timer timer(rt_.main_context());
  for (;;) {
    if (answered->load() == workers.size()) systemd::notify("WATCHDOG=1");
    answered->store(0);
    for (auto* io : workers) asio::post(*io, [answered] { answered->fetch_add(1); });
    timer.expires_after(interval / 2);
    auto [ec] = co_await timer.async_wait(as_result);
    if (ec || rt_.stopping()) co_return;
  }
}

}  // namespace tunnel::ops
