#pragma once
// Socket reads and writes that complete at once, done without a trip through the event
// loop. Asio 1.22 sends even an operation that completed immediately back through its
// scheduler: one more pass, and one more epoll_wait, per operation. These make the
// non-blocking call directly; on would_block the caller goes on with its asynchronous
// operation, which waits. (Never loop on them alone: a busy socket would then keep its
// worker from every other connection.)
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <cstddef>
#include <system_error>

namespace tunnel::net {

inline bool would_block(const std::error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

// One read of what is already there: bytes read, or `ec` set (would_block: nothing yet).
template <class Socket>
std::size_t read_now(Socket& s, asio::mutable_buffer b, std::error_code& ec) {
  if (!s.non_blocking()) s.non_blocking(true, ec);
  return ec ? 0 : s.read_some(b, ec);
}

// Writes what the socket takes now; returns how much. All of `b` unless `ec` is set
// (would_block: the rest must wait).
template <class Socket>
std::size_t write_now(Socket& s, asio::const_buffer b, std::error_code& ec) {
  if (!s.non_blocking()) s.non_blocking(true, ec);
  std::size_t done = 0;
  while (!ec && done < b.size()) done += s.write_some(b + done, ec);
  return done;
}

}  // namespace tunnel::net
