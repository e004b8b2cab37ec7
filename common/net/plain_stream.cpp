#include "net/plain_stream.hpp"

#include <algorithm>
#include <utility>
#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "net/immediate_io.hpp"

namespace tunnel::net {

namespace {
constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
}

asio::awaitable<io_result> plain_stream::wait_readable() {
  if (pending_taken_ < pending_.size()) co_return io_result{};
  auto [ec] = co_await socket_.async_wait(generic_socket::wait_read, as_result);
  readable_ = !ec;
  co_return io_result{ec, 0};
}

asio::awaitable<io_result> plain_stream::read_some(std::span<std::byte> buffer) {
  if (pending_taken_ < pending_.size() && !buffer.empty()) {
    const std::size_t n = std::min(buffer.size(), pending_.size() - pending_taken_);
    std::copy_n(pending_.begin() + static_cast<std::ptrdiff_t>(pending_taken_), n, buffer.begin());
    pending_taken_ += n;
    if (pending_taken_ == pending_.size()) pending_.clear(), pending_taken_ = 0;
    co_return io_result{{}, n};
  }
  if (std::exchange(readable_, false)) {  // just reported readable: read without a wait
    std::error_code ec;
    const std::size_t n = read_now(socket_, asio::buffer(buffer.data(), buffer.size()), ec);
    if (!would_block(ec)) co_return io_result{ec, n};
  }
  auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer.data(), buffer.size()),
                                                  as_result);
  co_return io_result{ec, n};
}

asio::awaitable<std::error_code> plain_stream::write_all(std::span<const std::byte> data) {
  std::error_code ec;
  const std::size_t done = write_now(socket_, asio::buffer(data.data(), data.size()), ec);
  if (!would_block(ec)) co_return ec;
  auto [aec, n] = co_await asio::async_write(socket_, asio::buffer(data.data() + done, data.size() - done),
                                             as_result);
  (void)n;
  co_return aec;
}

asio::awaitable<std::error_code> plain_stream::shutdown_send() {
  std::error_code ec;
  socket_.shutdown(generic_socket::shutdown_send, ec);
  co_return ec;
}

void plain_stream::close() {
  std::error_code ignored;
  socket_.close(ignored);
}

}  // namespace tunnel::net
