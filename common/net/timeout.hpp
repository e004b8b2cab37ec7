#pragma once
// Bounding a wait: every wait in the tunnel has a deadline.
#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <optional>

namespace tunnel::net {

// Ends normally whether the time passed or the wait was cancelled: with_timeout cancels it
// whenever the operation wins, which is nearly always, and an exception there (thrown,
// caught and rethrown by Asio's coroutine machinery) cost a few microseconds per connection.
inline asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
}

// Runs `op`; if `limit` passes first, `op` is cancelled and the result is nullopt.
// A zero limit means no deadline.
template <class T>
asio::awaitable<std::optional<T>> with_timeout(asio::awaitable<T> op, std::chrono::milliseconds limit) {
  if (limit.count() == 0) co_return co_await std::move(op);
  using namespace asio::experimental::awaitable_operators;
  // `||` returns on the first normal completion and cancels the other branch.
  auto outcome = co_await (std::move(op) || sleep_for(limit));
  if (outcome.index() == 0) co_return std::move(std::get<0>(outcome));
  co_return std::nullopt;
}

}  // namespace tunnel::net
