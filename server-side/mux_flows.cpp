#include "mux_flows.hpp"

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "net/held_datagrams.hpp"
#include "net/udp_receive.hpp"
#include "ops/flow_log.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::server {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using clock = std::chrono::steady_clock;

// Datagrams taken from one target socket per wake-up before yielding to other flows.
constexpr int batch = 64;

// One flow over TLS: the mux flow and the socket it relays from, so the target's replies
// come back to this flow alone. Owned by its coroutine; the mux flow's handlers point at it.
struct tls_flow {
  tls_flow(const asio::any_io_executor& ex, std::unique_ptr<mux::flow> f, std::shared_ptr<flow_budget> b,
           std::shared_ptr<std::size_t> held_bytes)
      : mux(std::move(f)),
        target(ex),
        wake(ex, asio::steady_timer::time_point::max()),
        budget(std::move(b)),
        early(std::move(held_bytes)) {}
  ~tls_flow() { budget->give_back(); }
  tls_flow(const tls_flow&) = delete;
  tls_flow& operator=(const tls_flow&) = delete;

  std::unique_ptr<mux::flow> mux;
  net::udp::socket target;  // connected once the target's name is looked up
  asio::steady_timer wake;  // cancelled when the mux flow ends or the flow is ended here
  net::udp::endpoint to;    // the target's address this flow took
  std::shared_ptr<flow_budget> budget;  // one place taken, given back at destruction
  net::held_datagrams early;            // from tunnel-in before the target's socket is up
  clock::time_point last_activity = clock::now();
  bool ended = false;
  std::string reason;
  ops::flow_record rec;
  net::drop_counter oversize{ops::udp_drop::oversized}, queue_full{ops::udp_drop::mux_queue_full},
      send_failed{ops::udp_drop::other}, early_full{ops::udp_drop::queue_full}, early_lost{ops::udp_drop::other};
};

// The receive buffer of every flow on this thread: each datagram is handed on before the
// next wait.
std::array<unsigned char, net::max_udp_payload + 1>& buffer() {
  static thread_local std::array<unsigned char, net::max_udp_payload + 1> b;
  return b;
}

void end(tls_flow& f, std::string reason) {
  if (f.ended) return;
  f.ended = true;
  f.reason = std::move(reason);
  std::error_code ignored;
  f.target.close(ignored);
  while (!f.early.empty())
    net::log_drop(f.early_lost, "datagram dropped: the flow ended while its target's name was looked up", f.rec.peer,
                  f.early.pop().size());
  f.wake.cancel();
}

// tunnel-in -> target: one datagram frame is one datagram, sent now (held, bounded, while
// the target is looked up) or lost (counted).
void to_target(tls_flow& f, std::span<const unsigned char> d) {
  if (f.ended) return;
  if (!f.target.is_open()) {
    f.last_activity = clock::now();  // the flow is in use: the lookup does not make it idle
    if (!f.early.push(d))
      net::log_drop(f.early_full, "datagram dropped: queue full while the target's name is looked up", f.rec.peer,
                    d.size());
    return;
  }
  const auto ec = net::send_datagram(f.target, d);
  // connection_refused reports an ICMP error for an earlier datagram; this one went.
  if (ec && ec != asio::error::connection_refused)
    return net::log_drop(f.send_failed, "datagram dropped: sending to the target failed", f.to, d.size());
  f.last_activity = clock::now();
  f.rec.datagrams_up++;
  f.rec.bytes_up += d.size();
}

// target -> tunnel-in: one datagram is one frame, queued now or lost (counted).
void to_tunnel(tls_flow& f, std::span<const unsigned char> d) {
  switch (f.mux->send(std::as_bytes(d))) {
    case mux::flow::send_result::sent:
      f.last_activity = clock::now();
      f.rec.datagrams_down++;
      f.rec.bytes_down += d.size();
      return;
    case mux::flow::send_result::oversized:
      return net::log_oversize(f.oversize, "datagram dropped: larger than a mux datagram frame", f.rec.target, d.size(),
                               mux::max_payload);
    case mux::flow::send_result::queue_full:
      return net::log_drop(f.queue_full, "datagram dropped: the mux connection's datagram queue is full", f.to,
                           d.size());
    case mux::flow::send_result::ended:
      return;  // the watch ends the flow and says why
  }
}

void target_unreachable(tls_flow& f, const std::error_code& ec) {
  const std::string error = net::connect_udp_error(ec);
  ops::warn("target unreachable").kv("peer", f.rec.peer).kv("target", f.rec.target).kv("error", error);
  if (!f.mux->ended()) f.mux->close(mux::reset_code::unreachable, error);
  end(f, "target unreachable");
}

// Connects the flow's socket to the service's target, its name looked up now, then sends
// what tunnel-in sent meanwhile.
asio::awaitable<void> open_target(tls_flow& f, net::address target, std::chrono::milliseconds lookup_limit) {
  const auto ec = co_await net::connect_udp(f.target, target, lookup_limit, f.to);
  if (f.ended) co_return;
  if (ec) co_return target_unreachable(f, ec);
  while (!f.early.empty() && !f.ended) to_target(f, f.early.pop());
}

// target -> tunnel-in, until the socket fails or is closed.
asio::awaitable<void> from_target(tls_flow& f) {
  const auto forward = [&f](std::span<const unsigned char> d) { to_tunnel(f, d); };
  const auto ec = co_await net::receive_connected(f.target, buffer(), f.ended, batch, forward);
  if (ec && !f.ended) end(f, "target socket failed: " + ec.message());
}

// Ends the flow on idle expiry, or when the mux flow ends (tunnel-in closed it, or the
// connection went).
asio::awaitable<void> watch(tls_flow& f, std::chrono::milliseconds idle) {
  for (;;) {
    if (f.ended) co_return;
    if (f.mux->ended()) {
      if (f.mux->closed_by_peer()) end(f, "closed by tunnel-in");
      else end(f, "mux connection ended: " + f.mux->reason());
      co_return;
    }
    const auto deadline = f.last_activity + idle;
    if (clock::now() >= deadline) {
      f.mux->close(mux::reset_code::timeout, "idle timeout");
      co_return end(f, "idle timeout");
    }
    f.wake.expires_at(deadline);
    co_await f.wake.async_wait(as_result);
  }
}

asio::awaitable<void> serve_flow(std::shared_ptr<connection_info> conn, std::unique_ptr<tls_flow> owned,
                                 const config::service& svc) {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  struct live_guard {
    connection_info& c;
    ~live_guard() { --c.live_streams; }
  } live{*conn};
  tls_flow& f = *owned;
  const auto idle = svc.udp.flow_idle;
  // `||`: each returns normally; whichever ends first (the target looked up, the socket
  // failing, or the watch on idle expiry or the mux flow's end) cancels the other.
  if (!f.target.is_open()) co_await (open_target(f, svc.target, svc.limits.connect) || watch(f, idle));
  if (!f.ended) co_await (from_target(f) || watch(f, idle));
  end(f, "target socket failed");
  if (!f.mux->ended()) f.mux->close(mux::reset_code::cancel, f.reason);
  ops::log_flow_closed(f.rec, f.reason);
}

std::string refusal_for(const mux_host& host, const connection_info& conn, const mux::flow& f,
                        std::optional<std::size_t>& route) {
  const auto context = host.current();
  route = context->find_route(f.service());
  if (!route) return "unknown service " + f.service();
  const port& p = host.services();
  if (!p.is_udp(*route)) return "service " + p.at(*route).name + " carries TCP: open a stream, not a flow";
  if (conn.peer && !context->admits(*conn.peer, *route))
    return "peer certificate not on the allow-list of service " + p.at(*route).name;
  return {};
}

}  // namespace

void accept_flow(mux_host& host, const std::shared_ptr<connection_info>& conn, const asio::any_io_executor& ex,
                 std::unique_ptr<mux::flow> f) {
  // Authorization at flow open, before anything reaches the target.
  std::optional<std::size_t> route;
  const std::string refusal = refusal_for(host, *conn, *f, route);
  if (!refusal.empty()) {
    ops::warn("flow refused")
        .kv("peer", conn->rec.peer)
        .kv("origin", f->origin())
        .kv("identity", conn->rec.identity)
        .kv("service", f->service())
        .kv("reason", refusal);
    ops::metrics::get().count(ops::handshake_failure::policy);
    f->close(mux::reset_code::refused, refusal);
    return;
  }
  const config::service& svc = host.services().at(*route);
  const udp_route* udp = host.services().udp_for(*route);
  if (!udp || !udp->budget->take()) {
    if (conn->flows_refused_at_limit.count())
      ops::warn("flow refused: limit reached")
          .kv("peer", conn->rec.peer)
          .kv("origin", f->origin())
          .kv("service", svc.name)
          .kv("max_flows", static_cast<std::uint64_t>(svc.udp.max_flows))
          .kv("refused_since_last_log", conn->flows_refused_at_limit.since_last_log())
          .kv("refused_total", conn->flows_refused_at_limit.total());
    f->close(mux::reset_code::limit, "tunnel-out flow limit reached");
    return;
  }
  auto owned = std::make_unique<tls_flow>(ex, std::move(f), udp->budget, conn->held_bytes);
  tls_flow& tf = *owned;
  tf.rec.peer = conn->rec.peer;
  tf.rec.origin = tf.mux->origin();
  tf.rec.identity = conn->rec.identity;
  tf.rec.service = svc.name;
  tf.rec.target = svc.target.to_string();
  tf.rec.over_tls = true;
  // An IP literal is connected to now; a name is looked up by the flow's coroutine
  // (open_target), which holds what comes meanwhile.
  if (const auto at = net::literal_endpoint(svc.target)) {
    tf.to = *at;
    if (const auto ec = net::connect_udp(tf.target, *at)) return target_unreachable(tf, ec);
  }
  tls_flow* raw = &tf;  // alive as long as its mux flow, which holds these handlers
  tf.mux->on_receive([raw](std::span<const std::byte> d) {
    to_target(*raw, {reinterpret_cast<const unsigned char*>(d.data()), d.size()});
  });
  tf.mux->on_event([raw] { raw->wake.cancel(); });
  ops::log_flow_authorized(tf.rec, conn->version, conn->cipher, false);
  ++conn->live_streams;
  asio::co_spawn(ex, serve_flow(conn, std::move(owned), svc), asio::detached);
}

}  // namespace tunnel::server
