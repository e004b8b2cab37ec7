#include "net/off_loop.hpp"

#include <asio/execution_context.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <csignal>
#include <pthread.h>
#include <system_error>
#include <thread>

namespace tunnel::net {
namespace {

// One per io_context that waited for work off its loop; its shutdown closes the gate
// (services shut down before the io_context's own scheduler).
class wakeup_gate_service : public asio::execution_context::service {
 public:
  static asio::execution_context::id id;
  explicit wakeup_gate_service(asio::execution_context& owner) : asio::execution_context::service(owner) {}
  const std::shared_ptr<wakeup_gate> gate = std::make_shared<wakeup_gate>();

 private:
  void shutdown() override {
    std::lock_guard lk(gate->m);
    gate->closed = true;
  }
};
asio::execution_context::id wakeup_gate_service::id;

struct job {
  std::mutex m;
  bool done = false;
};

}  // namespace

void start_detached(std::function<void()> body) {
  // The new thread inherits the mask in force when it is made: blocked from its first
  // instruction, not from some moment after it started.
  sigset_t all, before;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &before);
  try {
    std::thread(std::move(body)).detach();
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

std::shared_ptr<wakeup_gate> gate_of(const asio::any_io_executor& ex) {
  return asio::use_service<wakeup_gate_service>(asio::query(ex, asio::execution::context)).gate;
}

void wake_waiter(wakeup_gate& gate, const asio::any_io_executor& ex, const std::weak_ptr<asio::steady_timer>& timer) noexcept {
  std::lock_guard open(gate.m);
  if (gate.closed) return;
  try {
    asio::post(ex, [timer] {
      if (auto t = timer.lock()) t->cancel();
    });
  } catch (...) {
  }
}

asio::awaitable<bool> run_off_loop(std::function<void()> work) {
  const auto ex = co_await asio::this_coro::executor;
  auto gate = gate_of(ex);
  auto wake = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  auto state = std::make_shared<job>();
  try {
    start_detached([work = std::move(work), state, gate, ex, weak = std::weak_ptr<asio::steady_timer>(wake)]() noexcept {
      try {
        work();
      } catch (...) {
      }
      std::lock_guard lk(state->m);
      state->done = true;
      wake_waiter(*gate, ex, weak);  // (out of memory: never woken; it ends with its loop)
    });
  } catch (...) {  // no thread (std::system_error) or no memory for one
    co_return false;
  }
  // The post that wakes us runs on this (single-threaded) loop, so not before this
  // coroutine has suspended in the wait: done is read before it and cannot be missed.
  bool done = false;
  {
    std::lock_guard lk(state->m);
    done = state->done;
  }
  while (!done) {
    co_await wake->async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    std::lock_guard lk(state->m);
    done = state->done;
  }
  co_return true;
}

}  // namespace tunnel::net
