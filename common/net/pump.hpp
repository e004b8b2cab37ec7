#pragma once
// The pump: copies bytes both ways between two byte_streams until both directions have
// ended, carrying half-close across (EOF on one side becomes shutdown_send on the other),
// bounded by an idle timeout and a close timeout after the first half-close.
// It never knows which side is plain and which is secure.
#include <array>
#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

#include "net/stream.hpp"

namespace tunnel::net {

struct pump_limits {
  std::chrono::milliseconds idle_timeout{0};   // zero: none
  std::chrono::milliseconds close_timeout{0};  // zero: none
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
  clock::time_point last_activity = clock::now();
  std::optional<clock::time_point> first_eof_at;
  asio::steady_timer* watchdog_timer = nullptr;  // poked when a deadline may have moved
};

class pump_error : public std::system_error {
 public:
  pump_error(std::error_code ec, const std::string& where) : std::system_error(ec, where) {}
};

template <byte_stream From, byte_stream To>
asio::awaitable<void> copy(From& from, To& to, std::uint64_t& counter, pump_state& st,
                           const char* from_name, const char* to_name) {
  // One TLS record's worth: a larger read would be split into records anyway.
  std::array<std::byte, 16384> buffer;
  for (;;) {
    const io_result r = co_await from.read_some(buffer);
    if (r.ec == asio::error::eof) {
      if (auto ec = co_await to.shutdown_send())
        throw pump_error(ec, std::string(to_name) + " shutdown");
      if (!st.first_eof_at) {
        st.first_eof_at = clock::now();
        if (st.watchdog_timer) st.watchdog_timer->cancel();
      }
      co_return;
    }
    if (r.ec) throw pump_error(r.ec, std::string(from_name) + " read");
    st.last_activity = clock::now();
    if (auto ec = co_await to.write_all(std::span<const std::byte>(buffer.data(), r.bytes)))
      throw pump_error(ec, std::string(to_name) + " write");
    counter += r.bytes;
    st.last_activity = clock::now();
  }
}

// Returns the reason when a deadline passes; runs until cancelled otherwise.
inline asio::awaitable<std::string> watchdog(pump_state& st, pump_limits limits) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  st.watchdog_timer = &timer;
  for (;;) {
    auto deadline = clock::time_point::max();
    const auto now = clock::now();
    if (limits.idle_timeout.count() > 0) {
      const auto idle_deadline = st.last_activity + limits.idle_timeout;
      if (now >= idle_deadline) co_return "idle timeout";
      deadline = idle_deadline;
    }
    if (st.first_eof_at && limits.close_timeout.count() > 0) {
      const auto close_deadline = *st.first_eof_at + limits.close_timeout;
      if (now >= close_deadline) co_return "close timeout after half-close";
      deadline = std::min(deadline, close_deadline);
    }
    timer.expires_at(deadline);
    // A poke (cancel) only means "recompute"; a cancellation of the whole pump makes the
    // next co_await throw, because awaitables throw once cancelled by default.
    co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
}

}  // namespace detail

// Moves bytes between a and b until both directions end, an error occurs, or a timeout
// passes. Never throws for I/O errors: they end the pump and are described in `reason`.
// Cancellation of the calling coroutine propagates into both directions.
template <byte_stream A, byte_stream B>
asio::awaitable<pump_result> pump(A& a, B& b, pump_limits limits, const char* a_name,
                                  const char* b_name) {
  using namespace asio::experimental::awaitable_operators;
  detail::pump_state st;
  pump_result result;
  try {
    // `&&` ends both directions on the first exception (an I/O error in either);
    // `||` ends the directions when the watchdog returns a timeout reason, and ends the
    // watchdog when both directions have finished normally.
    auto outcome = co_await ((detail::copy(a, b, result.a_to_b, st, a_name, b_name) &&
                              detail::copy(b, a, result.b_to_a, st, b_name, a_name)) ||
                             detail::watchdog(st, limits));
    if (outcome.index() == 0) {
      result.reason = "closed";
      result.clean = true;
    } else {
      result.reason = std::get<1>(outcome);
    }
  } catch (const std::system_error& e) {
    result.reason = e.what();
  }
  co_return result;
}

}  // namespace tunnel::net
