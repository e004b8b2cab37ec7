#include "net/dial.hpp"

#include "net/timeout.hpp"

#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace tunnel::net {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);

asio::awaitable<dial_result> connect_unix(const address& to) {
  auto ex = co_await asio::this_coro::executor;
  dial_result out{{}, generic_socket(ex)};
  auto [ec] = co_await out.socket.async_connect(unix_endpoint(to.path), as_result);
  out.ec = ec;
  co_return out;
}

asio::awaitable<dial_result> connect_inet(const address& to) {
  auto ex = co_await asio::this_coro::executor;
  dial_result out{{}, generic_socket(ex)};
  asio::ip::tcp::resolver resolver(ex);
  auto [rec, results] = co_await resolver.async_resolve(
      to.host, std::to_string(to.port), asio::ip::resolver_base::numeric_service, as_result);
  if (rec) {
    out.ec = rec;
    co_return out;
  }
  out.ec = asio::error::host_not_found;
  for (const auto& entry : results) {
    std::error_code ignored;
    out.socket.close(ignored);
    auto [ec] = co_await out.socket.async_connect(to_generic(entry.endpoint()), as_result);
    out.ec = ec;
    if (!ec) {
      set_low_latency(out.socket);
      break;
    }
  }
  co_return out;
}

}  // namespace

asio::awaitable<dial_result> dial(const address& to, std::chrono::milliseconds timeout) {
  // (No conditional operator around awaitables: GCC 12 destroys such a temporary twice.)
  std::optional<dial_result> outcome;
  if (to.is_unix()) outcome = co_await with_timeout(connect_unix(to), timeout);
  else outcome = co_await with_timeout(connect_inet(to), timeout);
  if (outcome) co_return std::move(*outcome);
  co_return dial_result{asio::error::timed_out, generic_socket(co_await asio::this_coro::executor)};
}

}  // namespace tunnel::net
