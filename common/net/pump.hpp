#pragma once
// The pump: copies bytes both ways between two byte_streams until both directions have
// ended, carrying half-close across (EOF on one side becomes shutdown_send on the other),
// bounded by an idle timeout and a close timeout after the first half-close.
// It never knows which side is plain and which is secure.
#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

#include "net/cancelled.hpp"
#include "net/io_buffer.hpp"
#include "net/stream.hpp"

namespace tunnel::net {

struct pump_limits {
  std::chrono::milliseconds idle_timeout{0};   // zero: none
  std::chrono::milliseconds close_timeout{0};  // zero: none
  std::chrono::milliseconds max_lifetime{0};   // from the pump's start, however busy; zero: none
};

struct pump_result {
  std::uint64_t a_to_b = 0;
  std::uint64_t b_to_a = 0;
  std::string reason;  // "closed" when both sides ended cleanly
  bool clean = false;
};

namespace detail {

using clock = std::chrono::steady_clock;

struct pump_state {
  clock::time_point started = clock::now();
  clock::time_point last_activity = started;
  std::optional<clock::time_point> first_eof_at;
  int directions_done = 0;                       // ended cleanly (EOF carried across)
  int directions_finished = 0;                   // coroutines that have returned, any way
  std::string error;                             // the first failure, which ends the pump
  asio::steady_timer* watchdog_timer = nullptr;  // poked when the watchdog must re-decide

  void poke() {
    if (watchdog_timer) watchdog_timer->cancel();
  }
  void fail(const std::string& where, std::error_code ec) {
    if (error.empty()) error = where + ": " + ec.message();
    poke();
  }
};

// Asio 1.22: async operations complete with operation_aborted when cancelled, but a
// co_await of a nested *awaitable* throws once the coroutine is cancelled. Directions and
// the watchdog turn that off and look at the cancellation state themselves (net::is_cancelled).

// One direction. Never throws for I/O errors: it records the first failure in `st` and
// returns, and the watchdog ends the pump. (Asio 1.22's `||` only cancels its sibling on a
// *normal* completion, and its `&&` only on an exception, so errors travel as state.)
template <byte_stream From, byte_stream To>
asio::awaitable<void> copy(From& from, To& to, std::uint64_t& counter, pump_state& st,
                           const char* from_name, const char* to_name) {
  co_await asio::this_coro::throw_if_cancelled(false);
  std::optional<io_buffer> buffer;  // held only while bytes are moving
  for (;;) {
    if (!buffer) {
      co_await from.wait_readable();
      if (is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
      buffer.emplace();
    }
    const io_result r = co_await from.read_some(buffer->span());
    // Asio 1.22 awaitables do not throw once cancelled: look, or a completed-then-cancelled
    // read would start another wait that nobody cancels.
    if (is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    if (r.ec == asio::error::eof) {
      if (auto ec = co_await to.shutdown_send()) {
        st.fail(std::string(to_name) + " shutdown", ec);
        co_return;
      }
      if (!st.first_eof_at) st.first_eof_at = clock::now();
      ++st.directions_done;
      st.poke();
      co_return;
    }
    if (r.ec) {
      st.fail(std::string(from_name) + " read", r.ec);
      co_return;
    }
    st.last_activity = clock::now();
    const auto ec = co_await to.write_all(std::span<const std::byte>(buffer->data(), r.bytes));
    if (is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    if (ec) {
      st.fail(std::string(to_name) + " write", ec);
      co_return;
    }
    counter += r.bytes;
    st.last_activity = clock::now();
    // A short read drained the source: give the buffer back before waiting again, so an
    // idle connection holds none. (A full one means more is likely queued: keep it.)
    if (r.bytes < io_buffer::size) buffer.reset();
  }
}

// Decides when the pump ends: both directions done, a failure, or a deadline.
inline asio::awaitable<std::string> watchdog(pump_state& st, pump_limits limits) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  st.watchdog_timer = &timer;
  for (;;) {
    if (!st.error.empty()) co_return st.error;
    if (st.directions_done == 2) co_return "closed";
    auto deadline = clock::time_point::max();
    const auto now = clock::now();
    if (limits.idle_timeout.count() > 0) {
      const auto idle_deadline = st.last_activity + limits.idle_timeout;
      if (now >= idle_deadline) co_return "idle timeout";
      deadline = idle_deadline;
    }
    if (limits.max_lifetime.count() > 0) {
      const auto end_of_life = st.started + limits.max_lifetime;
      if (now >= end_of_life) co_return "max lifetime reached";
      deadline = std::min(deadline, end_of_life);
    }
    if (st.first_eof_at && limits.close_timeout.count() > 0) {
      const auto close_deadline = *st.first_eof_at + limits.close_timeout;
      if (now >= close_deadline) co_return "close timeout after half-close";
      deadline = std::min(deadline, close_deadline);
    }
    timer.expires_at(deadline);
    co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    // A poke (timer.cancel()) means "decide again"; a cancellation of this coroutine (the
    // shutdown deadline) means the pump is over.
    if (is_cancelled(co_await asio::this_coro::cancellation_state)) co_return "cut at shutdown";
  }
}

// Runs once a direction's coroutine has returned (on the pump's executor).
struct direction_finished {
  pump_state* st;
  void operator()(std::exception_ptr) const {
    ++st->directions_finished;
    st->poke();
  }
};

// How often join_directions says again that the directions are cancelled.
inline constexpr std::chrono::milliseconds cancel_repeat{100};

// Cancels both direction coroutines and waits until they have returned. A cancellation
// reaches the operation a coroutine is suspended in; one that arrives while it is between
// operations only marks it cancelled, and an operation it then starts inside a stream
// (the rest of a TLS record, say) would not see it, so a silent peer could hold the pump
// for good. Hence the cancellation is said again every cancel_repeat until both are back.
inline asio::awaitable<void> join_directions(pump_state& st, asio::cancellation_signal& a_to_b,
                                             asio::cancellation_signal& b_to_a) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  st.watchdog_timer = &timer;
  while (st.directions_finished < 2) {
    a_to_b.emit(asio::cancellation_type::terminal);  // (a no-op for one that has returned)
    b_to_a.emit(asio::cancellation_type::terminal);
    timer.expires_after(cancel_repeat);
    co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
  st.watchdog_timer = nullptr;
}

}  // namespace detail

// Moves bytes between a and b until both directions end, an error occurs, or a timeout
// passes. Never throws for I/O errors: they end the pump and are described in `reason`.
// Cancellation of the calling coroutine (the shutdown deadline) ends it too.
//
// Each direction is a coroutine of its own (co_spawn with a cancellation signal); this one
// keeps the watchdog, then cancels what still runs and waits for it. Cheaper per idle
// connection than Asio's awaitable operators, which spawn a thread per operand and per
// operator. A direction never outlives the pump: the streams are the caller's.
template <byte_stream A, byte_stream B>
asio::awaitable<pump_result> pump(A& a, B& b, pump_limits limits, const char* a_name,
                                  const char* b_name) {
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto ex = co_await asio::this_coro::executor;
  detail::pump_state st;
  pump_result result;
  asio::cancellation_signal stop_a_to_b, stop_b_to_a;
  asio::co_spawn(ex, detail::copy(a, b, result.a_to_b, st, a_name, b_name),
                 asio::bind_cancellation_slot(stop_a_to_b.slot(), detail::direction_finished{&st}));
  asio::co_spawn(ex, detail::copy(b, a, result.b_to_a, st, b_name, a_name),
                 asio::bind_cancellation_slot(stop_b_to_a.slot(), detail::direction_finished{&st}));
  const std::string verdict = co_await detail::watchdog(st, limits);
  st.watchdog_timer = nullptr;
  if (st.directions_finished < 2) co_await detail::join_directions(st, stop_a_to_b, stop_b_to_a);
  if (!st.error.empty()) result.reason = st.error;
  else if (st.directions_done == 2) result.reason = "closed";
  else result.reason = verdict;
  result.clean = result.reason == "closed";
  co_return result;
}

}  // namespace tunnel::net
