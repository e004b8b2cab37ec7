#pragma once
// The process runtime: worker threads with one io_context each, the accept loop that hands
// each connection to one worker for its whole life, the connection limit, and the
// SIGTERM/SIGINT drain (stop accepting, wait up to the shutdown timeout, then cancel).
#include <asio/awaitable.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "net/endpoint.hpp"
#include "net/listener.hpp"

namespace tunnel::ops {

// The process-wide limit (runtime::limit_process), kept in descriptors: an accepted
// connection takes two (its own and its next hop's), a tunnel-out mux stream one (its
// target's; the mux connection carrying it took two when accepted). Shared: holders may
// outlive the runtime's event loops.
class connection_budget {
 public:
  // Takes `n` descriptors unless fewer are left.
  bool try_take(std::size_t n) {
    auto used = used_.load(std::memory_order_relaxed);
    do {
      if (used + n > limit_.load(std::memory_order_relaxed)) return false;
    } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
    return true;
  }
  void give_back(std::size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  // The limit as whole connections (what --max-conns and the warnings speak of).
  std::size_t connections() const { return limit_.load(std::memory_order_relaxed) / 2; }
  void set_connections(std::size_t n) {
    limit_.store(n > std::numeric_limits<std::size_t>::max() / 2 ? n : 2 * n, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::size_t> used_{0};
  std::atomic<std::size_t> limit_{std::numeric_limits<std::size_t>::max()};
};

// Descriptors of a connection_budget, held for a scope.
class budget_unit {
 public:
  budget_unit(std::shared_ptr<connection_budget> b, std::size_t descriptors) : budget_(std::move(b)), n_(descriptors) {
    if (!budget_->try_take(n_)) budget_.reset();
  }
  ~budget_unit() {
    if (budget_) budget_->give_back(n_);
  }
  budget_unit(const budget_unit&) = delete;
  budget_unit& operator=(const budget_unit&) = delete;
  explicit operator bool() const { return budget_ != nullptr; }  // taken

 private:
  std::shared_ptr<connection_budget> budget_;
  std::size_t n_;
};

class runtime {
 public:
  // A connection handler owns the socket and returns when the connection has ended.
  using handler = std::function<asio::awaitable<void>(net::accepted)>;

  // `busy_poll`: how long an idle worker keeps looking for work before it sleeps (see
  // event_loop.hpp); zero: it sleeps at once.
  runtime(unsigned threads, std::chrono::milliseconds shutdown_timeout,
          std::chrono::microseconds busy_poll = std::chrono::microseconds(0));
  ~runtime();

  // The context where listeners and signals live (worker 0's).
  asio::io_context& main_context() { return workers_.front()->io; }
  // Worker i's context (i < worker_count()), for work that must live on every worker, such
  // as mux mode's pooled connections.
  std::size_t worker_count() const { return workers_.size(); }
  asio::io_context& worker_context(std::size_t i) { return workers_.at(i)->io; }

  // Starts accepting on `acceptor` (which must belong to main_context()); at most
  // `max_conns` connections of this acceptor live at once, the rest are closed at once
  // with a warning.
  void serve(net::generic_acceptor acceptor, std::size_t max_conns, handler on_connection);
  // All listeners together never hold more than `n` connections (what the open-file limit
  // allows), whatever each service's own --max-conns; budget() holders count against it too.
  void limit_process(std::size_t n) { budget_->set_connections(n); }
  const std::shared_ptr<connection_budget>& budget() const { return budget_; }

  // Registers `hook` to run on the main context when SIGTERM/SIGINT arrives, right after
  // the listeners close and before the drain (services without an acceptor, such as UDP,
  // stop there). Call before run(); the hook must not throw.
  void on_shutdown(std::function<void()> hook) { shutdown_hooks_.push_back(std::move(hook)); }
  // Registers `busy`, asked on the main context during the drain: while it says true the
  // drain waits (within the shutdown timeout) as for a live connection. For work that is no
  // accepted connection but must still reach the peer, such as UDP flows' goodbyes over TLS.
  void hold_shutdown_while(std::function<bool()> busy) { busy_.push_back(std::move(busy)); }

  // Registers `hook` to run on the main context on SIGHUP (periodic = false) and, after
  // reload_every(), once per interval (periodic = true). A reload runs the hooks in the
  // order registered, each awaited before the next (one may wait for work off the loop),
  // and reloads never overlap: a SIGHUP during one makes one more run after it, a periodic
  // tick during one is skipped. Call before run(). Without hooks SIGHUP is only logged.
  using reload_hook = std::function<asio::awaitable<void>(bool periodic)>;
  void on_reload(reload_hook hook) { reload_hooks_.push_back(std::move(hook)); }
  // Each worker's event loop, e.g. to check that all of them still make progress.
  std::vector<asio::io_context*> worker_contexts() {
    std::vector<asio::io_context*> out;
    for (auto& w : workers_) out.push_back(&w->io);
    return out;
  }
  bool stopping() const { return stopping_; }
  // Runs the reload hooks every `interval` until shutdown; 0 does nothing. Call before run().
  void reload_every(std::chrono::milliseconds interval);
  // Runs `task` on the main context every `interval` until shutdown; 0 does nothing. Call
  // before run(). An exception from the task is logged, and the task runs again next time.
  void every(std::chrono::milliseconds interval, std::function<void()> task);

  // Runs the workers until shutdown completes. Returns the process exit code.
  int run();

  std::size_t active_connections() const { return active_.load(std::memory_order_relaxed); }

 private:
  struct worker {
    asio::io_context io{1};
    asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
    std::list<asio::cancellation_signal> live;  // touched only on this worker's thread
  };

  asio::awaitable<void> accept_loop(net::generic_acceptor& acceptor, std::size_t max_conns,
                                    handler on_connection);
  void spawn(worker& w, net::accepted conn, const handler& on_connection,
             std::shared_ptr<std::atomic<std::size_t>> listener_count);
  asio::awaitable<void> watch_signals();
  // Starts a reload, or notes that one more must follow the one under way.
  void request_reload(bool periodic);
  asio::awaitable<void> run_reloads(bool periodic);
  asio::awaitable<void> repeat(std::chrono::milliseconds interval, std::function<void()> task);
  asio::awaitable<void> drain();
  void cancel_all();

  std::vector<std::unique_ptr<worker>> workers_;
  std::unique_ptr<asio::signal_set> signals_;
  std::list<net::generic_acceptor> acceptors_;
  std::vector<std::function<void()>> shutdown_hooks_;
  std::vector<reload_hook> reload_hooks_;
  // A reload under way since reload_started_ (main context only), and whether a SIGHUP
  // came during it.
  bool reloading_ = false;
  bool reload_again_ = false;
  std::chrono::steady_clock::time_point reload_started_{};
  std::vector<std::function<bool()>> busy_;
  std::atomic<std::size_t> active_{0};  // accepted connections (the drain waits for them)
  std::shared_ptr<connection_budget> budget_ = std::make_shared<connection_budget>();
  std::size_t next_worker_ = 0;
  std::chrono::milliseconds shutdown_timeout_;
  std::chrono::microseconds busy_poll_;
  bool stopping_ = false;
};

}  // namespace tunnel::ops
