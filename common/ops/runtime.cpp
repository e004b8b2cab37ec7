#include "ops/runtime.hpp"

#include <algorithm>

#include <csignal>
#include <thread>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "net/endpoint.hpp"
#include "ops/accept_backoff.hpp"
#include "ops/event_loop.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "ops/systemd.hpp"

namespace tunnel::ops {
namespace {
constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using namespace std::chrono_literals;
}  // namespace

runtime::runtime(unsigned threads, std::chrono::milliseconds shutdown_timeout, std::chrono::microseconds busy_poll)
    : shutdown_timeout_(shutdown_timeout), busy_poll_(busy_poll) {
  if (threads == 0) threads = 1;
  for (unsigned i = 0; i < threads; ++i) {
    workers_.push_back(std::make_unique<worker>());
    // Set each loop's reactor up now (its epoll, eventfd and timerfd descriptors) rather than
    // at a worker's first connection: the descriptors a process holds are then known from
    // start-up, and one at the limit is not found out in the middle of serving.
    asio::steady_timer warm(workers_.back()->io);
  }
  // A peer that resets while we write must surface as EPIPE, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  // Registered now, not when the loop starts: a SIGTERM or SIGHUP that arrives between
  // start-up and run() must not take the default action (terminating the process).
  signals_ = std::make_unique<asio::signal_set>(main_context(), SIGINT, SIGTERM, SIGHUP);
  asio::co_spawn(main_context(), watch_signals(), asio::detached);
}

runtime::~runtime() = default;

void runtime::serve(net::generic_acceptor acceptor, std::size_t max_conns, handler on_connection) {
  acceptors_.push_back(std::move(acceptor));
  asio::co_spawn(main_context(), accept_loop(acceptors_.back(), max_conns, std::move(on_connection)),
                 asio::detached);
}

asio::awaitable<void> runtime::accept_loop(net::generic_acceptor& acceptor, std::size_t max_conns,
                                           handler on_connection) {
  accept_backoff backoff(net::bound_address(acceptor));
  // This listener's connections: --max-conns is a service's own limit, so load on another
  // port (handshakes held open there by anyone who can reach it) never uses it up.
  // Shared with each connection's completion, which may run after this loop has ended.
  auto here = std::make_shared<std::atomic<std::size_t>>(0);
  while (!stopping_) {
    worker& w = *workers_[next_worker_];
    next_worker_ = (next_worker_ + 1) % workers_.size();
    net::generic_endpoint peer;
    auto [ec, accepted] = co_await acceptor.async_accept(w.io, peer, as_result);
    net::generic_socket socket(std::move(accepted));
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      co_await backoff.failed(ec);
      continue;
    }
    backoff.succeeded();
    const bool service_full = here->load(std::memory_order_relaxed) >= max_conns;
    if (service_full || !budget_->try_take(2)) {
      std::error_code ignored;
      warn("connection refused: limit reached")
          .kv("peer", net::describe(peer))
          .kv("limit", service_full ? "service" : "process")
          .kv("max_conns", static_cast<std::uint64_t>(service_full ? max_conns : budget_->connections()));
      socket.close(ignored);
      metrics::get().count(outcome::limit);
      continue;
    }
    here->fetch_add(1, std::memory_order_relaxed);
    active_.fetch_add(1, std::memory_order_relaxed);
    metrics::get().connections_active.fetch_add(1, std::memory_order_relaxed);
    spawn(w, net::accepted{std::move(socket), peer}, on_connection, here);
  }
}

void runtime::spawn(worker& w, net::accepted conn, const handler& on_connection,
                    std::shared_ptr<std::atomic<std::size_t>> listener_count) {
  asio::post(w.io, [this, &w, conn = std::move(conn), on_connection, listener_count]() mutable {
    auto it = w.live.emplace(w.live.end());
    asio::co_spawn(w.io, on_connection(std::move(conn)),
                   asio::bind_cancellation_slot(it->slot(), [this, &w, it, listener_count](std::exception_ptr e) {
                     if (e) error("connection failed unexpectedly").kv("error", what_of(e));
                     // The signal is erased after this handler returns, not inside it.
                     asio::post(w.io, [&w, it] { w.live.erase(it); });
                     listener_count->fetch_sub(1, std::memory_order_relaxed);
                     active_.fetch_sub(1, std::memory_order_relaxed);
                     budget_->give_back(2);
                     metrics::get().connections_active.fetch_sub(1, std::memory_order_relaxed);
                   }));
  });
}

asio::awaitable<void> runtime::watch_signals() {
  auto& signals = *signals_;
  for (;;) {
    auto [ec, sig] = co_await signals.async_wait(as_result);
    if (ec) co_return;
    if (sig == SIGHUP) {
      if (reload_hooks_.empty()) info("SIGHUP received; nothing to reload in this version");
      else request_reload(false);
      continue;
    }
    stopping_ = true;
    for (auto& a : acceptors_) {
      std::error_code ignored;
      a.close(ignored);
    }
    for (auto& hook : shutdown_hooks_) hook();
    // Logged after the listeners are closed: from this line on, new connections are refused.
    info("shutting down: no longer accepting")
        .kv("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")
        .kv("active", static_cast<std::uint64_t>(active_connections()))
        .kv("shutdown_timeout_ms", static_cast<std::int64_t>(shutdown_timeout_.count()));
    co_await drain();
    co_return;
  }
}

void runtime::reload_every(std::chrono::milliseconds interval) {
  every(interval, [this] { request_reload(true); });
}

namespace {
void log_reload_exception(std::exception_ptr e) noexcept {
  try {
    error("reload failed unexpectedly").kv("error", what_of(e));
  } catch (...) {  // out of memory even for the line
  }
}
}  // namespace

void runtime::request_reload(bool periodic) {
  if (reloading_) {
    if (periodic) return;  // the next tick looks again
    reload_again_ = true;
    const auto running = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                               reload_started_);
    warn("SIGHUP received while a reload is still under way; another reload follows it")
        .kv("under_way_ms", static_cast<std::int64_t>(running.count()));
    return;
  }
  if (!periodic) info("SIGHUP received; reloading");
  reload_started_ = std::chrono::steady_clock::now();
  reloading_ = true;  // (before the spawn, which may run the reload at once)
  try {
    asio::co_spawn(main_context(), run_reloads(periodic), asio::detached);
  } catch (...) {  // out of memory: the next trigger tries again
    reloading_ = false;
    log_reload_exception(std::current_exception());
  }
}

asio::awaitable<void> runtime::run_reloads(bool periodic) {
  // Nothing escapes the loop, so reloading_ is always cleared at its end.
  do {
    if (!periodic) systemd::notify_reloading();  // the notify-reload protocol's start
    for (auto& hook : reload_hooks_) {
      if (stopping_) break;  // a reload that ends during the drain acts on nothing more
      try {
        co_await hook(periodic);
      } catch (...) {  // one failing hook must not stop the others, nor SIGTERM's handling
        log_reload_exception(std::current_exception());
      }
    }
    periodic = false;
    reload_started_ = std::chrono::steady_clock::now();
  } while (std::exchange(reload_again_, false) && !stopping_);
  reloading_ = false;
}

void runtime::every(std::chrono::milliseconds interval, std::function<void()> task) {
  if (interval.count() > 0) asio::co_spawn(main_context(), repeat(interval, std::move(task)), asio::detached);
}

asio::awaitable<void> runtime::repeat(std::chrono::milliseconds interval, std::function<void()> task) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (!stopping_) {
    tick.expires_after(interval);
    auto [ec] = co_await tick.async_wait(as_result);
    if (ec || stopping_) co_return;
    try {
      task();
    } catch (const std::exception& e) {  // a periodic chore must not end the process
      error("periodic task failed").kv("error", e.what());
    }
  }
}

asio::awaitable<void> runtime::drain() {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + shutdown_timeout_;
  const auto holding = [this] { return std::any_of(busy_.begin(), busy_.end(), [](const auto& b) { return b(); }); };
  const auto busy = [&] { return active_connections() > 0 || holding(); };
  while (busy() && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(20ms);
    co_await tick.async_wait(as_result);
  }
  if (holding())
    warn("shutdown timeout passed; leaving without every goodbye sent (mux connections, UDP flows over TLS)");
  if (active_connections() > 0) {
    warn("shutdown timeout passed; closing remaining connections")
        .kv("active", static_cast<std::uint64_t>(active_connections()));
    cancel_all();
    const auto hard_deadline = std::chrono::steady_clock::now() + 2s;
    while (active_connections() > 0 && std::chrono::steady_clock::now() < hard_deadline) {
      tick.expires_after(10ms);
      co_await tick.async_wait(as_result);
    }
  }
  info("stopped");
  for (auto& w : workers_) w->guard.reset();
  for (auto& w : workers_) w->io.stop();
}

void runtime::cancel_all() {
  for (auto& w : workers_) {
    asio::post(w->io, [&w = *w] {
      for (auto& signal : w.live) signal.emit(asio::cancellation_type::terminal);
    });
  }
}

int runtime::run() {
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < workers_.size(); ++i)
    threads.emplace_back([this, &w = *workers_[i]] { run_event_loop(w.io, busy_poll_); });
  run_event_loop(workers_.front()->io, busy_poll_);
  for (auto& t : threads) t.join();
  return 0;
}

}  // namespace tunnel::ops
