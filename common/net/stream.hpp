#pragma once
// The contract every byte stream in the data path meets, so that the pump can move bytes
// between any two of them (plain TCP, Unix, TLS, later mux streams) without knowing which.
#include <asio/awaitable.hpp>
#include <concepts>
#include <cstddef>
#include <span>
#include <system_error>

namespace tunnel::net {

struct io_result {
  std::error_code ec;  // asio::error::eof on an orderly end of the peer's sending side
  std::size_t bytes = 0;
};

// wait_readable:  waits until read_some would not have to wait (bytes, the end of input or
//                 an error are there), holding no buffer meanwhile. Its result is advisory:
//                 read_some reports the end or the error itself.
// read_some:      waits for at least one byte; a clean end of input is ec == eof.
// write_all:      writes every byte or fails; returns only when the bytes are handed on,
//                 so the caller's pace follows the peer's (backpressure).
// shutdown_send:  half-close: no more writes; the peer sees a clean end of input.
// close:          drops the connection at once; pending operations complete with an error.
template <class S>
concept byte_stream = requires(S& s, std::span<std::byte> in, std::span<const std::byte> out) {
  { s.wait_readable() } -> std::same_as<asio::awaitable<io_result>>;
  { s.read_some(in) } -> std::same_as<asio::awaitable<io_result>>;
  { s.write_all(out) } -> std::same_as<asio::awaitable<std::error_code>>;
  { s.shutdown_send() } -> std::same_as<asio::awaitable<std::error_code>>;
  s.close();
};

}  // namespace tunnel::net
