#pragma once
// A plain TCP or Unix stream socket in the byte_stream shape.
#include <asio/awaitable.hpp>
#include <vector>

#include "net/endpoint.hpp"
#include "net/stream.hpp"

namespace tunnel::net {

class plain_stream {
 public:
  explicit plain_stream(generic_socket socket) : socket_(std::move(socket)) {}

  asio::awaitable<io_result> wait_readable();
  asio::awaitable<io_result> read_some(std::span<std::byte> buffer);
  asio::awaitable<std::error_code> write_all(std::span<const std::byte> data);
  asio::awaitable<std::error_code> shutdown_send();
  void close();

  generic_socket& socket() { return socket_; }

  // Hands back bytes already taken from the socket that belong to the stream (what arrived
  // behind a PROXY header): the next reads return them before reading the socket again.
  void unread(std::span<const std::byte> bytes) {
    pending_.assign(bytes.begin(), bytes.end());
    pending_taken_ = 0;
  }

 private:
  generic_socket socket_;
  std::vector<std::byte> pending_;
  std::size_t pending_taken_ = 0;
  bool readable_ = false;  // wait_readable just saw data: the next read goes straight to the socket
  bool input_ended_ = false;  // a read returned the peer's end of input
};

static_assert(byte_stream<plain_stream>);

}  // namespace tunnel::net
