// The pump's end: a cancellation that reaches a direction between two of its operations.
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <optional>

#include "net/pump.hpp"

using namespace tunnel;
using namespace std::chrono_literals;

namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);

// A stream whose peer sent the first bytes of something and then went silent. Its read keeps
// yielding (asio::post, which no cancellation reaches) until its coroutine is marked
// cancelled, then starts a wait that only a cancellation of that wait itself ends: the
// cancellation came between two operations, as it can inside a TLS read.
struct silent_midway {
  asio::steady_timer never;
  explicit silent_midway(asio::io_context& io) : never(io, asio::steady_timer::time_point::max()) {}

  asio::awaitable<net::io_result> wait_readable() { co_return net::io_result{}; }
  asio::awaitable<net::io_result> read_some(std::span<std::byte>) {
    co_await asio::this_coro::throw_if_cancelled(false);
    while (!net::is_cancelled(co_await asio::this_coro::cancellation_state))
      co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    auto [ec] = co_await never.async_wait(as_result);
    co_return net::io_result{ec ? ec : asio::error::operation_aborted, 0};
  }
  asio::awaitable<std::error_code> write_all(std::span<const std::byte>) { co_return std::error_code{}; }
  asio::awaitable<std::error_code> shutdown_send() { co_return std::error_code{}; }
  void close() {}
};

asio::awaitable<void> run_pump(silent_midway& a, silent_midway& b, std::optional<net::pump_result>& out) {
  out = co_await net::pump(a, b, net::pump_limits{50ms, 0ms}, "a", "b");
}

}  // namespace

TEST_CASE("pump: a direction that misses its cancellation between operations still ends") {
  asio::io_context io(1);
  silent_midway a(io), b(io);
  std::optional<net::pump_result> result;
  asio::co_spawn(io, run_pump(a, b, result), asio::detached);
  io.run_for(5s);  // without the repeated cancellation the pump never ends
  REQUIRE(result.has_value());
  CHECK(result->reason == "idle timeout");
  CHECK_FALSE(result->clean);
}
