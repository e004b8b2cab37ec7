#pragma once
// The receive side both UDP relays share: the listening socket's read loop, and the
// rate-limited log line of a dropped datagram.
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <system_error>

#include "net/udp_drops.hpp"
#include "net/udp_socket.hpp"
#include "ops/log.hpp"

namespace tunnel::net {

namespace detail {
inline void warn_drop(drop_counter& c, const char* what, const std::string& peer, std::size_t size) {
  ops::warn(what)
      .kv("peer", peer)
      .kv("size", static_cast<std::uint64_t>(size))
      .kv("dropped_since_last_log", c.since_last_log())
      .kv("dropped_total", c.total());
}
}  // namespace detail

// Counts one dropped datagram; logs `what` with the peer and the running totals when the
// counter says a line is due (rate-limited, so a flood costs a counter bump each).
inline void log_drop(drop_counter& c, const char* what, const udp::endpoint& from, std::size_t size) {
  if (c.count()) detail::warn_drop(c, what, describe(from), size);
}
inline void log_drop(drop_counter& c, const char* what, const std::string& peer, std::size_t size) {
  if (c.count()) detail::warn_drop(c, what, peer, size);
}

// Counts one datagram dropped for its size (never split or truncated); logs `what` with
// the size and the limit when the counter says a line is due.
inline void log_oversize(drop_counter& c, const char* what, const std::string& peer, std::size_t size,
                         std::size_t max) {
  if (!c.count()) return;
  ops::warn(what)
      .kv("peer", peer)
      .kv("size", static_cast<std::uint64_t>(size))
      .kv("max", static_cast<std::uint64_t>(max))
      .kv("dropped_since_last_log", c.since_last_log())
      .kv("dropped_total", c.total());
}

// A connected socket's read loop (a flow's socket towards its target): waits for
// readability, then reads up to `batch` datagrams without blocking into `buffer` and hands
// each to `on_datagram(span)`. An ICMP error for an earlier send (is_icmp_report: the
// target's port is closed for now, a host unreachable, ...; it may come back, and anyone
// can forge one) is skipped. Returns when `stopped` is set, or the socket's error once it
// fails or is closed.
template <class Handler>
asio::awaitable<std::error_code> receive_connected(udp::socket& socket, std::span<unsigned char> buffer,
                                                   const bool& stopped, int batch, Handler on_datagram) {
  while (!stopped) {
    auto [ec] = co_await socket.async_wait(udp::socket::wait_read, asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return ec;
    for (int i = 0; i < batch && !stopped; ++i) {
      std::error_code rec;
      const std::size_t n = socket.receive(asio::buffer(buffer.data(), buffer.size()), 0, rec);
      if (rec == asio::error::would_block) break;
      if (is_icmp_report(rec)) continue;
      if (rec) co_return rec;
      on_datagram(std::span<const unsigned char>(buffer.data(), n));
    }
  }
  co_return std::error_code{};
}

// Waits for readability, then reads up to `batch` datagrams without blocking into `buffer`
// (a pending asynchronous receive would need a buffer of its own) and hands each to
// `on_datagram(span, from)`. Returns when the socket fails (closed) or `stopping` is set.
// An exception from the handler (out of memory for a new context, most likely) loses that
// datagram only: it is logged and the loop keeps serving.
template <class Handler>
asio::awaitable<void> receive_datagrams(udp::socket& socket, std::span<unsigned char> buffer,
                                        const bool& stopping, int batch, Handler on_datagram) {
  while (!stopping) {
    auto [ec] = co_await socket.async_wait(udp::socket::wait_read,
                                           asio::experimental::as_tuple(asio::use_awaitable));
    if (ec || stopping) co_return;
    for (int i = 0; i < batch && !stopping; ++i) {
      udp::endpoint from;
      std::error_code rec;
      const std::size_t n = socket.receive_from(asio::buffer(buffer.data(), buffer.size()), from, 0, rec);
      if (rec == asio::error::would_block) break;
      if (rec) break;  // an ICMP error for an earlier send: nothing to do for it here
      try {
        on_datagram(std::span<const unsigned char>(buffer.data(), n), from);
      } catch (const std::exception& e) {
        ops::error("datagram handling failed").kv("peer", describe(from)).kv("error", e.what());
      }
    }
  }
}

}  // namespace tunnel::net
