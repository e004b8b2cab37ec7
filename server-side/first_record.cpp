#include "first_record.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "mux/frame.hpp"
#include "net/timeout.hpp"

namespace tunnel::server {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);

// One read into `r`; false when the record is complete or reading is over. A free coroutine
// (GCC 12 and lambdas); the loop lives in the caller, not around this co_await.
asio::awaitable<bool> read_more(net::generic_socket& socket, first_record& r) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto space = r.bytes->span().subspan(r.size);
  const auto [ec, n] = co_await socket.async_read_some(asio::buffer(space.data(), space.size()), as_result);
  r.size += n;
  r.ended = ec;
  r.offer = tls::offered_alpn(r.read(), mux::alpn_name);
  co_return !ec && r.offer == tls::alpn_offer::need_more && r.size < net::io_buffer::size;
}

asio::awaitable<bool> fill(net::generic_socket& socket, first_record& r) {
  co_await asio::this_coro::throw_if_cancelled(false);
  r.bytes.emplace();
  bool more = true;
  while (more) more = co_await read_more(socket, r);
  co_return true;
}

}  // namespace

asio::awaitable<void> read_first_record(net::generic_socket& socket, first_record& r, std::chrono::milliseconds limit) {
  const auto finished = co_await net::with_timeout(fill(socket, r), limit);
  if (!finished || r.offer == tls::alpn_offer::need_more) r.offer = tls::alpn_offer::none;
  if (!finished) r.ended = {};  // our own deadline cancelled the read, the peer ended nothing
}

}  // namespace tunnel::server
