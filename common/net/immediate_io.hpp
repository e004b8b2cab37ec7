#pragma once
// Socket reads and writes that complete at once, done without a trip through the event
// loop. Asio 1.22 sends even an operation that completed immediately back through its
// scheduler: one more pass, and one more epoll_wait, per operation. These make the
// non-blocking call directly and leave only what would block to the asynchronous
// operation. (Never loop on direct reads alone: a busy socket would then keep its worker
// from every other connection.)
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <cstddef>
#include <sys/socket.h>
#include <system_error>

#include "net/stream.hpp"

namespace tunnel::net {

inline bool would_block(const std::error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

// The socket calls are made with MSG_DONTWAIT on the descriptor itself: no switch of the
// socket to non-blocking mode (an ioctl per connection), and never Asio's synchronous path,
// which polls until done on a socket the user did not set non-blocking.
inline std::error_code last_socket_error() { return {errno, asio::error::get_system_category()}; }

// One read of what is already there: bytes read, or `ec` set (would_block: nothing yet;
// eof: the peer's end of input).
template <class Socket>
std::size_t read_now(Socket& s, asio::mutable_buffer b, std::error_code& ec) {
  for (;;) {
    const ssize_t n = ::recv(s.native_handle(), b.data(), b.size(), MSG_DONTWAIT);
    if (n > 0 || (n == 0 && b.size() == 0)) {
      ec.clear();
      return static_cast<std::size_t>(n);
    }
    if (n == 0) ec = asio::error::eof;
    else if (errno != EINTR) ec = last_socket_error();
    else continue;
    return 0;
  }
}

// Writes what the socket takes now; returns how much. All of `b` unless `ec` is set
// (would_block: the rest must wait).
template <class Socket>
std::size_t write_now(Socket& s, asio::const_buffer b, std::error_code& ec) {
  ec.clear();
  std::size_t done = 0;
  while (done < b.size()) {
    const ssize_t n = ::send(s.native_handle(), static_cast<const char*>(b.data()) + done, b.size() - done,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) done += static_cast<std::size_t>(n);
    else if (n == 0) {  // not for a stream socket; never spin on it
      ec = asio::error::would_block;
      break;
    } else if (errno != EINTR) {
      ec = last_socket_error();
      break;
    }
  }
  return done;
}

// Writes all of `b`: what the socket takes now at once, the rest asynchronously.
template <class Socket>
asio::awaitable<std::error_code> write_soon(Socket& s, asio::const_buffer b) {
  std::error_code ec;
  const std::size_t done = write_now(s, b, ec);
  if (!would_block(ec)) co_return ec;
  auto [aec, n] = co_await asio::async_write(s, b + done, asio::experimental::as_tuple(asio::use_awaitable));
  (void)n;
  co_return aec;
}

// One read: at once when `readable` (the socket was just reported readable), else — or
// when nothing was there after all — asynchronously.
template <class Socket>
asio::awaitable<io_result> read_soon(Socket& s, asio::mutable_buffer b, bool readable) {
  if (readable) {
    std::error_code ec;
    const std::size_t n = read_now(s, b, ec);
    if (!would_block(ec)) co_return io_result{ec, n};
  }
  auto [ec, n] = co_await s.async_read_some(b, asio::experimental::as_tuple(asio::use_awaitable));
  co_return io_result{ec, n};
}

}  // namespace tunnel::net
