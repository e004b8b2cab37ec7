#include "net/plain_stream.hpp"

#include <algorithm>
#include <utility>
#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

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
  const io_result r =
      co_await read_soon(socket_, asio::buffer(buffer.data(), buffer.size()), std::exchange(readable_, false));
  if (r.ec == asio::error::eof) input_ended_ = true;
  co_return r;
}

asio::awaitable<std::error_code> plain_stream::write_all(std::span<const std::byte> data) {
  co_return co_await write_soon(socket_, asio::buffer(data.data(), data.size()));
}

asio::awaitable<std::error_code> plain_stream::shutdown_send() {
  std::error_code ec;
  // The peer's input has ended too, so both ways are over: close() sends the FIN, and is the
  // system call the connection needs anyway (a connection per request pays one less).
  // Nothing can be left unread to turn the close into a reset.
  if (input_ended_) {
    socket_.close(ec);
    co_return ec;
  }
  socket_.shutdown(generic_socket::shutdown_send, ec);
  co_return ec;
}

void plain_stream::close() {
  std::error_code ignored;
  socket_.close(ignored);
}

}  // namespace tunnel::net
