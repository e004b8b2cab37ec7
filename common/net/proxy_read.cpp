#include "net/proxy_read.hpp"

#include <asio/error.hpp>
#include <asio/this_coro.hpp>
#include <vector>

#include "net/timeout.hpp"

namespace tunnel::net {
namespace {

proxy_read_result refused(std::string reason) {
  proxy_read_result r;
  r.reason = std::move(reason);
  return r;
}

// A free coroutine, not a capturing coroutine lambda: GCC 12 mishandles the latter.
asio::awaitable<proxy_read_result> read_until_decided(plain_stream& s, std::vector<std::byte>& buffer) {
  // On timeout the read is cancelled: let it report operation_aborted instead of throwing.
  co_await asio::this_coro::throw_if_cancelled(false);
  const std::span<std::byte> all(buffer);
  std::size_t filled = 0;
  while (filled < all.size()) {
    const auto r = co_await s.read_some(all.subspan(filled));
    if (r.ec == asio::error::eof && filled == 0) co_return proxy_read_result{proxy_read_result::outcome::probe};
    if (r.ec == asio::error::eof) co_return refused("the connection ended inside the PROXY header");
    if (r.ec) co_return refused("reading the PROXY header: " + r.ec.message());
    filled += r.bytes;
    proxy_read_result out;
    out.header = proxy::decode(all.first(filled));
    if (out.header.status == proxy::decode_status::invalid) co_return refused(out.header.reason);
    if (out.header.status == proxy::decode_status::complete) {
      s.unread(all.subspan(out.header.length, filled - out.header.length));
      out.result = proxy_read_result::outcome::ok;
      co_return out;
    }
  }
  co_return refused("no decision on the PROXY header within its size limit");  // decode() rules this out
}

}  // namespace

asio::awaitable<proxy_read_result> read_proxy_header(plain_stream& s, std::chrono::milliseconds timeout) {
  std::vector<std::byte> buffer(proxy::max_header_length);
  auto outcome = co_await with_timeout(read_until_decided(s, buffer), timeout);
  if (outcome) co_return std::move(*outcome);
  co_return proxy_read_result{proxy_read_result::outcome::timeout};
}

}  // namespace tunnel::net
