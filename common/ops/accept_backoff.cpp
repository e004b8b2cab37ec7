#include "ops/accept_backoff.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::ops {

asio::awaitable<void> accept_backoff::failed(const std::error_code& ec) {
  metrics::get().accept_failures.fetch_add(1, std::memory_order_relaxed);
  last_failure_ = std::chrono::steady_clock::now();
  if (failures_++ == 0) {
    since_ = last_failure_;
    warn("accept failed; backing off").kv("listen", listen_).kv("error", ec.message());
  }
  asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
  co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
}

void accept_backoff::succeeded() {
  const auto now = std::chrono::steady_clock::now();
  if (failures_ == 0 || now - last_failure_ < std::chrono::seconds(1)) return;
  info("accept resumed")
      .kv("listen", listen_)
      .kv("failed_attempts", failures_)
      .kv("duration_s", std::chrono::duration<double>(last_failure_ - since_).count());
  failures_ = 0;
}

}  // namespace tunnel::ops
