#pragma once
// A plain TCP or Unix stream socket in the byte_stream shape.
#include <asio/awaitable.hpp>

#include "net/endpoint.hpp"
#include "net/stream.hpp"

namespace tunnel::net {

class plain_stream {
 public:
  explicit plain_stream(generic_socket socket) : socket_(std::move(socket)) {}

  asio::awaitable<io_result> read_some(std::span<std::byte> buffer);
  asio::awaitable<std::error_code> write_all(std::span<const std::byte> data);
  asio::awaitable<std::error_code> shutdown_send();
  void close();

  generic_socket& socket() { return socket_; }

 private:
  generic_socket socket_;
};

static_assert(byte_stream<plain_stream>);

}  // namespace tunnel::net
