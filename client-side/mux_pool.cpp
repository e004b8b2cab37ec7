#include "mux_pool.hpp"

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <list>
#include <random>

#include "net/cancelled.hpp"
#include "net/dial.hpp"
#include "net/timeout.hpp"
#include "ops/log.hpp"
#include "tls/handshake.hpp"

namespace tunnel::client {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using clock = std::chrono::steady_clock;

// Reconnect backoff after failures: doubling from 200 ms to 10 s, each wait drawn from
// [half, whole] so that many tunnel-ins restarting together do not reconnect in step.
constexpr std::chrono::milliseconds backoff_min = 200ms, backoff_max = 10s;
// A connection tunnel-out ends (or sends GOAWAY on) sooner than this after it came up does
// not reset the backoff: a broken or hostile tunnel-out that answers the first ping and
// then hangs up must not have every slot handshake again in a tight loop.
constexpr std::chrono::milliseconds least_healthy_life = 1s;

std::chrono::milliseconds jittered(std::chrono::milliseconds d) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<std::int64_t> pick(d.count() / 2, d.count());
  return std::chrono::milliseconds(pick(rng));
}

mux::session_settings settings_for(const config::service& svc) {
  mux::session_settings s;
  s.client = true;
  s.keepalive = svc.mux.keepalive;
  s.rotate_bytes = svc.mux.rotate_bytes;
  s.rotate_age = svc.mux.rotate_age;
  return s;
}

}  // namespace

std::string identity_of(const tls::tls_stream& secure) {
  return secure.tls().peer() ? secure.tls().peer()->describe() : std::string("unknown");
}

// Everything one worker's sessions share; touched only on that worker's thread (except
// `io`, which is fixed). Held by shared_ptr by every coroutine on the worker, so it lives
// as long as the last of them.
struct mux_pool::worker_state {
  struct entry {
    mux::session* session;
    bool adopted;
  };
  struct slot {
    explicit slot(asio::io_context& io) : wake(io, asio::steady_timer::time_point::max()) {}
    asio::steady_timer wake;  // cancelled when its session changes state, or on stop
  };

  worker_state(asio::io_context& ctx, std::shared_ptr<std::atomic<std::size_t>> live_sessions)
      : io(ctx), live(std::move(live_sessions)), settling(ctx, asio::steady_timer::time_point::max()) {}
  asio::io_context& io;
  std::shared_ptr<std::atomic<std::size_t>> live;  // the pool's count of running sessions
  std::list<entry> sessions;
  std::vector<std::shared_ptr<slot>> slots;
  bool started = false, stopping = false;
  std::size_t pending = 0;  // slots dialling, or with a session the server has not answered yet
  std::uint64_t settled = 0;  // attempts that ended (up and answered, or failed)
  // Cancelled (never re-armed) when an attempt settles, when a session changes while
  // someone waits, and when the pool stops: legacy connections waiting in pick_or_wait
  // look again then.
  asio::steady_timer settling;
  std::size_t waiting = 0;  // legacy connections in pick_or_wait

  void settle_one() {
    --pending, ++settled;
    settling.cancel();
  }

  bool has_own_session() const {
    return std::any_of(sessions.begin(), sessions.end(),
                       [](const entry& e) { return !e.adopted && e.session->usable() && e.session->ready(); });
  }
  static std::size_t load(const mux::session& s) { return s.stream_count() + s.flow_count(); }
};

namespace {

using worker_state = mux_pool::worker_state;

// Runs one session to its end on its worker; owns the TLS connection and the session.
asio::awaitable<void> run_session(std::shared_ptr<worker_state> ws, std::unique_ptr<tls::tls_stream> secure,
                                  std::unique_ptr<mux::session> s, std::shared_ptr<worker_state::slot> owner,
                                  std::shared_ptr<bool> ended) {
  co_await asio::this_coro::throw_if_cancelled(false);
  // However the session ends (an exception too): off the worker's list, which must never
  // hold a session that is gone, uncounted, and its slot told.
  struct finally {
    worker_state& w;
    const mux::session* s;
    worker_state::slot* owner;
    bool& ended;
    ~finally() {
      w.sessions.remove_if([this](const worker_state::entry& e) { return e.session == s; });
      ended = true;
      w.live->fetch_sub(1, std::memory_order_relaxed);
      if (owner) owner->wake.cancel();
    }
  } cleanup{*ws, s.get(), owner.get(), *ended};
  const auto started = clock::now();
  const std::string reason = co_await s->run();
  const bool failed_early = !s->ready();
  ops::event(failed_early ? spdlog::level::warn : spdlog::level::info, "mux connection closed")
      .kv("identity", identity_of(*secure))
      .kv("reason", reason)
      .kv("streams", s->stats().streams_opened)
      .kv("flows", s->stats().flows_opened)
      .kv("bytes_sent", s->stats().bytes_sent)
      .kv("bytes_received", s->stats().bytes_received)
      .kv("receive_window", std::uint64_t{s->stats().receive_window})
      .kv("duration_s", std::chrono::duration<double>(clock::now() - started).count());
  s.reset();  // before the TLS stream it borrows
}

// An adopted connection has done its job once idle, if the worker has its own.
bool surplus(const worker_state& w, const worker_state::entry& e) {
  const mux::session& s = *e.session;
  return e.adopted && worker_state::load(s) == 0 && !s.retiring() && !s.ended() && w.has_own_session();
}

// Once a slot's session is ready: adopted connections that went idle while the worker had
// none of its own are not needed any more (their own changes only come with their streams).
void retire_surplus(worker_state& w) {
  std::vector<mux::session*> idle;  // goaway may end a session, which removes its entry
  for (const auto& e : w.sessions)
    if (surplus(w, e)) idle.push_back(e.session);
  for (auto* s : idle) s->goaway(mux::reset_code::cancel, "surplus connection");
}

// Registers `s` on `ws` and starts its coroutine. Returns the session.
mux::session* launch(const std::shared_ptr<worker_state>& ws, std::unique_ptr<tls::tls_stream> secure,
                     const config::service& svc, std::shared_ptr<worker_state::slot> owner,
                     std::shared_ptr<bool> ended) {
  auto s = std::make_unique<mux::session>(*secure, settings_for(svc));
  mux::session* raw = s.get();
  const bool adopted = owner == nullptr;
  worker_state* w = ws.get();  // alive while the session is (run_session holds it)
  raw->on_change([w, raw, owner, adopted] {
    if (owner) owner->wake.cancel();
    if (w->waiting > 0) w->settling.cancel();  // it may have become ready or have room again
    if (surplus(*w, {raw, adopted})) raw->goaway(mux::reset_code::cancel, "surplus connection");
  });
  // Listed and counted only once nothing more can throw: the list must never hold a session
  // that is gone (pick() reads it).
  auto task = run_session(ws, std::move(secure), std::move(s), owner, std::move(ended));
  ws->sessions.push_back({raw, adopted});
  ws->live->fetch_add(1, std::memory_order_relaxed);
  try {
    asio::co_spawn(ws->io, std::move(task), asio::detached);
  } catch (...) {
    ws->sessions.pop_back();
    ws->live->fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
  if (w->stopping) raw->goaway(mux::reset_code::shutdown, "tunnel-in shutting down");
  return raw;
}

// Why an attempt gave no mux connection ("" when it did).
std::string attempt_failure(const tunnel_attempt& attempt) {
  if (!attempt.secure) return (attempt.unreachable ? "tunnel-out unreachable: " : "handshake failed: ") + attempt.reason;
  if (attempt.secure->tls().alpn() != mux::alpn_name) return "tunnel-out does not offer mux mode (ALPN tunnel-mux/1)";
  return {};
}

// One pool slot: keeps one session up on its worker.
asio::awaitable<void> run_slot(std::shared_ptr<worker_state> ws, std::shared_ptr<worker_state::slot> sl,
                               std::size_t index, const config::service& svc,
                               std::shared_ptr<tls::context_source> source) {
  co_await asio::this_coro::throw_if_cancelled(false);
  std::chrono::milliseconds backoff{0};
  std::string last_failure;
  // Its own timer: sessions poke sl->wake whenever they change, which must not cut a
  // backoff short.
  asio::steady_timer pause(ws->io);
  while (!ws->stopping) {
    if (backoff.count() > 0) {
      pause.expires_after(jittered(backoff));
      co_await pause.async_wait(as_result);
      if (ws->stopping) break;
    }
    ++ws->pending;
    bool counted = true, session_failed = false;
    std::string failure, identity = "unknown";
    try {
      auto attempt = co_await connect_tunnel(svc, source->current());
      failure = attempt_failure(attempt);
      identity = attempt.identity;
      if (failure.empty() && !ws->stopping) {
        ops::info("mux connection up")
            .kv("slot", static_cast<std::uint64_t>(index))
            .kv("identity", identity_of(*attempt.secure))
            .kv("tls", attempt.secure->tls().version())
            .kv("cipher", attempt.secure->tls().ciphersuite());
        auto ended = std::make_shared<bool>(false);
        mux::session* s = launch(ws, std::move(attempt.secure), svc, sl, ended);
        const auto up_at = std::chrono::steady_clock::now();
        bool was_ready = false;
        // Wait until the session stops taking streams; it then finishes its streams on its
        // own while this slot brings up the replacement (make before break).
        while (!*ended && !ws->stopping && s->usable()) {
          was_ready = was_ready || s->ready();
          if (was_ready && counted) {
            ws->settle_one(), counted = false;
            retire_surplus(*ws);
          }
          sl->wake.expires_at(asio::steady_timer::time_point::max());
          co_await sl->wake.async_wait(as_result);
        }
        if (!*ended) was_ready = was_ready || s->ready();
        // (Logged as it closed: "mux connection closed".)
        if (!was_ready) failure = "session failed before tunnel-out answered", session_failed = true;
        else if ((*ended || s->retired_by_peer()) && std::chrono::steady_clock::now() - up_at < least_healthy_life)
          failure = "tunnel-out ended the connection within a second of its start", session_failed = true;
      }
    } catch (const std::exception& e) {
      // (Out of memory setting up TLS or a session.) The slot carries on after a backoff.
      failure = std::string("unexpected error: ") + e.what();
    }
    if (counted) ws->settle_one();
    if (ws->stopping) break;
    if (failure.empty()) {
      backoff = std::chrono::milliseconds{0};
      last_failure.clear();
      continue;
    }
    backoff = std::min(backoff_max, std::max(backoff_min, backoff * 2));
    if (!session_failed) {
      // The first failure of a run is a warning; the same failure again is debug noise.
      ops::event(failure == last_failure ? spdlog::level::debug : spdlog::level::warn, "mux connection failed")
          .kv("slot", static_cast<std::uint64_t>(index))
          .kv("identity", identity)
          .kv("reason", failure)
          .kv("retry_in_ms", static_cast<std::int64_t>(backoff.count()));
    }
    last_failure = failure;
  }
}

}  // namespace

asio::awaitable<tunnel_attempt> connect_tunnel(const config::service& svc,
                                               std::shared_ptr<const tls::tls_context> context) {
  co_await asio::this_coro::throw_if_cancelled(false);
  tunnel_attempt out;
  auto dialed = co_await net::dial(svc.target, svc.limits.connect);
  if (dialed.ec) {
    out.unreachable = true;
    out.reason = dialed.reason();
    co_return out;
  }
  std::unique_ptr<tls::tls_stream> secure;
  try {
    secure = std::make_unique<tls::tls_stream>(std::move(dialed.socket), std::move(context));
  } catch (const std::exception& e) {  // out of memory for the TLS session
    out.reason = std::string("cannot set up TLS: ") + e.what();
    co_return out;
  }
  const auto hs = co_await tls::run_handshake(*secure, svc.limits.handshake);
  out.identity = identity_of(*secure);
  if (!hs.ok) {
    out.reason = hs.reason;
    secure->close();
    co_return out;
  }
  out.secure = std::move(secure);
  co_return out;
}

mux_pool::mux_pool(ops::runtime& rt, const config::service& svc, std::shared_ptr<tls::context_source> source,
                   bool main_worker_only)
    : svc_(svc), source_(std::move(source)) {
  const std::size_t workers = main_worker_only ? 1 : rt.worker_count();  // worker 0 is the main one
  for (std::size_t i = 0; i < workers; ++i)
    workers_.push_back(std::make_shared<worker_state>(rt.worker_context(i), live_));
  for (std::size_t i = 0; i < svc.mux.pool; ++i) {
    auto& ws = *workers_[i % workers_.size()];
    ws.slots.push_back(std::make_shared<worker_state::slot>(ws.io));
  }
}

mux_pool::~mux_pool() = default;

void mux_pool::start() {
  if (started_.exchange(true)) return;
  std::size_t index = 0;
  for (auto& ws : workers_) {
    for (auto& sl : ws->slots) {
      asio::post(ws->io, [ws, sl, index, &svc = svc_, source = source_] {
        if (ws->stopping) return;
        asio::co_spawn(ws->io, run_slot(ws, sl, index, svc, source), asio::detached);
      });
      ++index;
    }
  }
}

namespace {
void goaway_all(mux_pool::worker_state& ws, mux::reset_code code, std::string_view reason) {
  // Copy: goaway may end a session, which removes its entry.
  std::vector<mux::session*> sessions;
  for (auto& e : ws.sessions) sessions.push_back(e.session);
  for (auto* s : sessions) s->goaway(code, reason);
}
}  // namespace

void mux_pool::stop() {
  for (auto& ws : workers_) {
    asio::post(ws->io, [ws] {
      ws->stopping = true;
      for (auto& sl : ws->slots) sl->wake.cancel();
      ws->settling.cancel();
      goaway_all(*ws, mux::reset_code::shutdown, "tunnel-in shutting down");
    });
  }
}

void mux_pool::retire_all(std::string_view reason) {
  for (auto& ws : workers_)
    asio::post(ws->io, [ws, why = std::string(reason)] { goaway_all(*ws, mux::reset_code::cancel, why); });
}

mux_pool::worker_state* mux_pool::local(const asio::any_io_executor& ex) {
  auto& ctx = asio::query(ex, asio::execution::context);
  for (auto& ws : workers_)
    if (&static_cast<asio::execution_context&>(ws->io) == &ctx) return ws.get();
  return nullptr;
}

mux::session* mux_pool::pick(const asio::any_io_executor& ex) {
  auto* ws = local(ex);
  if (!ws) return nullptr;
  mux::session* best = nullptr;
  bool best_adopted = true;
  for (auto& e : ws->sessions) {
    if (!e.session->usable() || !e.session->ready()) continue;
    const bool better = !best || (best_adopted && !e.adopted) ||
                        (best_adopted == e.adopted && worker_state::load(*e.session) < worker_state::load(*best));
    if (better) {
      best = e.session;
      best_adopted = e.adopted;
    }
  }
  return best;
}

mux::session* mux_pool::still_usable(const asio::any_io_executor& ex, const mux::session* s) {
  auto* ws = local(ex);
  if (!ws || !s) return nullptr;
  for (auto& e : ws->sessions)
    if (e.session == s) return e.session->usable() ? e.session : nullptr;
  return nullptr;
}

namespace {
// A free coroutine, not a capturing coroutine lambda: GCC 12 mishandles the latter.
asio::awaitable<void> wait_for_settling(mux_pool::worker_state& ws) {
  co_await ws.settling.async_wait(as_result);
}
}  // namespace

asio::awaitable<mux::session*> mux_pool::pick_or_wait(std::chrono::milliseconds limit) {
  const auto ex = co_await asio::this_coro::executor;
  auto* ws = local(ex);
  const auto deadline = clock::now() + limit;
  const auto settled = ws ? ws->settled : 0;
  for (;;) {
    if (auto* s = pick(ex)) co_return s;
    // Only the attempt under way is worth waiting for: once one settled without giving us
    // a session, a connection of our own says precisely why it fails.
    if (!ws || ws->pending == 0 || ws->settled != settled || ws->stopping || clock::now() >= deadline) {
      ops::debug("no mux connection ready on this worker")
          .kv("pending", static_cast<std::uint64_t>(ws ? ws->pending : 0))
          .kv("sessions", static_cast<std::uint64_t>(ws ? ws->sessions.size() : 0))
          .kv("started", ws && ws->started ? "yes" : "no");
      co_return nullptr;
    }
    // Woken when an attempt on this worker settles (start-up and reconnects only: the
    // sessions' own changes, on every stream, wake nobody here).
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()) + 1ms;
    ++ws->waiting;
    co_await (wait_for_settling(*ws) || net::sleep_for(left));
    --ws->waiting;
    if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return nullptr;
  }
}

mux::session* mux_pool::adopt(const asio::any_io_executor& ex, std::unique_ptr<tls::tls_stream> secure) {
  auto* w = local(ex);
  if (!w) return nullptr;
  std::shared_ptr<worker_state> ws;
  for (auto& candidate : workers_)
    if (candidate.get() == w) ws = candidate;
  return launch(ws, std::move(secure), svc_, nullptr, std::make_shared<bool>(false));
}

std::size_t mux_pool::live_sessions() const { return live_->load(std::memory_order_relaxed); }

void log_attempt_failure(const tunnel_attempt& a, const std::string& peer, const std::string& connect) {
  if (a.unreachable) {
    ops::warn("tunnel-out unreachable").kv("peer", peer).kv("connect", connect).kv("error", a.reason);
    return;
  }
  ops::warn("handshake with tunnel-out failed")
      .kv("peer", peer)
      .kv("connect", connect)
      .kv("identity", a.identity)
      .kv("reason", a.reason);
}

asio::awaitable<acquired_session> acquire_session(mux_pool& pool, const config::service& svc,
                                                  std::shared_ptr<const tls::tls_context> context) {
  co_await asio::this_coro::throw_if_cancelled(false);
  acquired_session out;
  // Named: GCC 12 destroys a class prvalue passed by value to a coroutine in co_await early.
  const std::chrono::milliseconds wait = svc.limits.connect + svc.limits.handshake;
  out.session = co_await pool.pick_or_wait(wait);
  if (out.session) co_return out;
  // Nothing up on this worker (start-up, tunnel-out restarting): a connection of our own.
  out.attempt = co_await connect_tunnel(svc, std::move(context));
  if (!out.attempt.secure || out.attempt.secure->tls().alpn() != mux::alpn_name) co_return out;
  ops::info("mux connection up").kv("identity", identity_of(*out.attempt.secure)).kv("adopted", "true");
  const auto ex = co_await asio::this_coro::executor;
  out.session = pool.adopt(ex, std::move(out.attempt.secure));
  pool.start();  // tunnel-out speaks mux: keep connections ready from now on
  co_return out;
}

}  // namespace tunnel::client
