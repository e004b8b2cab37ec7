#include "mux_server.hpp"

#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "net/plain_stream.hpp"
#include "net/proxy_endpoint.hpp"
#include "net/pump.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "mux_connection.hpp"
#include "mux_flows.hpp"
#include "target_leg.hpp"

namespace tunnel::server {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using namespace std::chrono_literals;

struct stream_count_guard {
  std::atomic<std::size_t>& n;
  explicit stream_count_guard(std::atomic<std::size_t>& c) : n(c) { n.fetch_add(1, std::memory_order_relaxed); }
  ~stream_count_guard() { n.fetch_sub(1, std::memory_order_relaxed); }
};

void finish(mux::stream& st, const net::pump_result& result) {
  if (result.clean) st.close();
  else if (result.reason.find("timeout") != std::string::npos) st.reset(mux::reset_code::timeout, result.reason);
  else st.reset(mux::reset_code::cancel, result.reason);
}

// `dialling`: this stream's entry in conn->stream_cancels, cleared once the target is dialled.
asio::awaitable<void> serve_stream(mux_host& host, std::shared_ptr<connection_info> conn,
                                   std::unique_ptr<mux::stream> st, bool& dialling) {
  co_await asio::this_coro::throw_if_cancelled(false);
  struct live_guard {
    connection_info& c;
    ~live_guard() { --c.live_streams; }
  } live{*conn};
  ops::connection_record rec = conn->rec;
  rec.started = std::chrono::steady_clock::now();
  // Authorization at stream open, before anything reaches the target: the stream names its
  // service, whose own allow-list must admit the connection's peer.
  const auto context = host.current();
  const auto route = context->find_route(st->service());
  std::string refusal;
  if (!route) refusal = "unknown service " + st->service();
  else if (host.services().is_udp(*route))
    refusal = "service " + host.services().at(*route).name + " carries UDP: open a flow, not a stream";
  else if (conn->peer && !context->admits(*conn->peer, *route))
    refusal = "peer certificate not on the allow-list of service " + host.services().at(*route).name;
  if (!refusal.empty()) {
    ops::warn("stream refused").kv("peer", rec.peer).kv("origin", st->origin()).kv("identity", rec.identity).kv("reason", refusal);
    ops::metrics::get().count(ops::handshake_failure::policy);
    st->reset(mux::reset_code::refused, refusal);
    co_return;
  }
  const config::service& svc = host.services().at(*route);
  rec.service = svc.name;
  rec.target = svc.target.to_string();
  const bool service_full = host.streams.load(std::memory_order_relaxed) >= svc.max_conns;
  const ops::budget_unit descriptor(host.budget(), 1);
  if (service_full || !descriptor) {
    ops::warn("connection refused: limit reached")
        .kv("peer", rec.peer)
        .kv("origin", st->origin())
        .kv("limit", service_full ? "service" : "process")
        .kv("max_conns", static_cast<std::uint64_t>(service_full ? svc.max_conns : host.budget()->connections()));
    ops::metrics::get().count(ops::outcome::limit);
    st->reset(mux::reset_code::limit, "tunnel-out connection limit reached");
    co_return;
  }
  stream_count_guard counted(host.streams);
  ops::log_authorized(rec, conn->version, conn->cipher);
  ops::debug("stream opened").kv("peer", rec.peer).kv("origin", st->origin()).kv("stream", static_cast<std::uint64_t>(st->id()));

  // Mux mode: the client is the legacy client tunnel-in accepted (the stream's origin).
  std::optional<target_connection> target;
  if (!st->failed())
    target = co_await open_target(svc, {client_from_origin(st->origin(), conn->tunnel_in), conn->accepted_on});
  dialling = false;
  // (A dial that won the race with the stream's end left this coroutine marked cancelled.)
  co_await asio::this_coro::reset_cancellation_state();
  if (st->failed()) {  // tunnel-in reset the stream, or the mux connection ended, first
    ops::log_closed(rec, 0, 0,
                    mux::ended_with_connection(st->error()) ? "mux connection ended while dialling the target"
                                                            : "reset by tunnel-in while dialling the target",
                    false);
    co_return;
  }
  auto& dialed = *target;
  if (!dialed.ok) {
    const std::string& error = dialed.error;
    ops::warn("target unreachable").kv("peer", rec.peer).kv("identity", rec.identity).kv("target", rec.target).kv("error", error);
    st->reset(mux::reset_code::unreachable, error);
    ops::log_closed(rec, 0, 0, "target unreachable", false);
    co_return;
  }
  const auto result = co_await pump_to_target(*st, svc, std::move(dialed.socket), host.services().target_tls_for(*route));
  finish(*st, result);
  ops::log_closed(rec, result.a_to_b, result.b_to_a, result.reason, result.clean);
}

}  // namespace

void mux_host::drain() {
  {
    std::lock_guard lock(mutex_);
    draining_ = true;
  }
  retire_all("tunnel-out shutting down");
}

void mux_host::retire_all(std::string_view reason) {
  std::vector<std::pair<mux::session*, asio::any_io_executor>> live;
  {
    std::lock_guard lock(mutex_);
    live = sessions_;
  }
  for (auto& [s, ex] : live) {
    // Looked up again on the session's own thread, where it is added and removed: the
    // pointer is only used if the session is still there.
    asio::post(ex, [this, s = s, why = std::string(reason)] {
      bool present = false;
      {
        std::lock_guard lock(mutex_);
        for (auto& e : sessions_) present = present || e.first == s;
      }
      if (present) s->goaway(mux::reset_code::shutdown, why);
    });
  }
}

void mux_host::add(mux::session* s, asio::any_io_executor ex) {
  bool draining;
  {
    std::lock_guard lock(mutex_);
    sessions_.emplace_back(s, std::move(ex));
    draining = draining_;
  }
  if (draining) s->goaway(mux::reset_code::shutdown, "tunnel-out shutting down");
}

void mux_host::remove(mux::session* s) {
  std::lock_guard lock(mutex_);
  std::erase_if(sessions_, [s](const auto& e) { return e.first == s; });
}

asio::awaitable<void> serve_mux(mux_host& host, tls::tls_stream& secure, ops::connection_record rec) {
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto ex = co_await asio::this_coro::executor;
  const auto& svc = host.services().first();
  auto conn = std::make_shared<connection_info>();
  conn->rec = rec;
  conn->peer = secure.tls().peer();
  conn->version = secure.tls().version();
  conn->cipher = secure.tls().ciphersuite();
  conn->accepted_on = accepted_on(secure.socket());
  std::error_code no_peer;
  if (const auto remote = secure.socket().remote_endpoint(no_peer); !no_peer)
    if (auto ip = net::to_ip_endpoint(remote)) conn->tunnel_in = proxy::unmapped(*ip);
  ops::info("mux connection authorized")
      .kv("peer", rec.peer)
      .kv("identity", rec.identity)
      .kv("tls", conn->version)
      .kv("cipher", conn->cipher);

  mux::session_settings settings;
  settings.client = false;
  settings.keepalive = svc.mux.keepalive;
  // A client answers the drain ping within a round trip; on a slow, full path that can
  // take a while, so allow it the keepalive bound (at least 5 s) before refusing OPENs.
  settings.drain_limit = std::max<std::chrono::milliseconds>(std::chrono::seconds(5), svc.mux.keepalive);
  mux::session session(secure, settings);
  session.on_accept([&host, conn, ex, max_streams = settings.max_streams](std::unique_ptr<mux::stream> st) {
    // Streams count until their coroutine ends, not only while the session knows them: a
    // stream reset at once must not let its peer start dial after dial.
    if (conn->stream_cancels.size() >= max_streams) {
      st->reset(mux::reset_code::limit, "too many streams on this connection");
      return;
    }
    ++conn->live_streams;
    auto it = conn->stream_cancels.emplace(conn->stream_cancels.end());
    // A stream that fails while its target is being dialled (tunnel-in reset it, or the
    // connection ended) stops the dial there.
    st->on_failed([it] {
      if (it->dialling) it->signal.emit(asio::cancellation_type::terminal);
    });
    asio::co_spawn(ex, serve_stream(host, conn, std::move(st), it->dialling),
                   asio::bind_cancellation_slot(it->signal.slot(), [conn, it, ex](std::exception_ptr e) {
                     if (e) ops::error("stream failed unexpectedly").kv("peer", conn->rec.peer).kv("error", ops::what_of(e));
                     // (Erased after this handler returns, not inside it.)
                     asio::post(ex, [conn, it] { conn->stream_cancels.erase(it); });
                   }));
  });
  session.on_accept_flow([&host, conn, ex](std::unique_ptr<mux::flow> f) { accept_flow(host, conn, ex, std::move(f)); });
  host.add(&session, ex);
  // A reload between the end of the handshake and add() found no session to retire: this
  // one was judged by the replaced credentials, so it takes no new streams either.
  if (secure.tls().context().replaced()) session.goaway(mux::reset_code::shutdown, "credentials reloaded");
  const std::string reason = co_await session.run();
  host.remove(&session);
  // Let the streams log their end (they fail at once now) before this connection counts as
  // gone: the shutdown drain waits for connections, not for stream coroutines.
  asio::steady_timer tick(ex);
  for (int i = 0; i < 200 && conn->live_streams > 0; ++i) {
    tick.expires_after(10ms);
    co_await tick.async_wait(as_result);
  }
  ops::info("mux connection closed")
      .kv("peer", rec.peer)
      .kv("identity", rec.identity)
      .kv("reason", reason)
      .kv("streams", session.stats().streams_opened)
      .kv("flows", session.stats().flows_opened)
      .kv("bytes_sent", session.stats().bytes_sent)
      .kv("bytes_received", session.stats().bytes_received)
      .kv("receive_window", std::uint64_t{session.stats().receive_window})
      .kv("duration_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - rec.started).count());
}

}  // namespace tunnel::server
