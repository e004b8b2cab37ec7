#include "net/dial.hpp"

#include "net/timeout.hpp"
#include "net/transparent.hpp"

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

// Opens `s` for `to`, transparent and bound to `source` (port 0: the kernel picks one).
std::error_code prepare_transparent(generic_socket& s, const generic_endpoint& to, const generic_endpoint& source) {
  std::error_code ec;
  s.open(to.protocol(), ec);
  if (!ec) ec = make_transparent(s, to.data()->sa_family);
  if (!ec) s.bind(source, ec);
  return ec;
}

// `source`: nullptr for an ordinary connection, else the address to leave from.
asio::awaitable<dial_result> connect_inet(const address& to, const generic_endpoint* source) {
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
  if (source) out.ec = asio::error::address_family_not_supported;
  for (const auto& entry : results) {
    std::error_code ignored;
    out.socket.close(ignored);
    const generic_endpoint endpoint = to_generic(entry.endpoint());
    if (source) {
      if (endpoint.data()->sa_family != source->data()->sa_family) continue;
      if ((out.ec = prepare_transparent(out.socket, endpoint, *source))) continue;
    }
    auto [ec] = co_await out.socket.async_connect(endpoint, as_result);
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
  else outcome = co_await with_timeout(connect_inet(to, nullptr), timeout);
  if (outcome) co_return std::move(*outcome);
  co_return dial_result{asio::error::timed_out, generic_socket(co_await asio::this_coro::executor)};
}

asio::awaitable<dial_result> dial_from(const address& to, const generic_endpoint& source,
                                       std::chrono::milliseconds timeout) {
  auto outcome = co_await with_timeout(connect_inet(to, &source), timeout);
  if (outcome) co_return std::move(*outcome);
  co_return dial_result{asio::error::timed_out, generic_socket(co_await asio::this_coro::executor)};
}

}  // namespace tunnel::net
