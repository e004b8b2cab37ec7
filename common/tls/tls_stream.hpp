#pragma once
// A TLS connection over a stream socket in the byte_stream shape: the engine does the TLS,
// this class moves its ciphertext to and from the socket with coroutines.
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <system_error>
#include <tuple>

#include "net/endpoint.hpp"
#include "net/stream.hpp"
#include "tls/engine.hpp"

namespace tunnel::tls {

class tls_stream {
 public:
  // Takes ownership of a connected socket. Throws like engine's constructor.
  // `without_alpn`: see engine.
  tls_stream(net::generic_socket socket, std::shared_ptr<const tls_context> context, bool without_alpn = false);

  // Bytes already read from the socket that belong to the TLS stream (the first record,
  // read to choose the configuration): the engine sees them first. `ended`: the read that
  // took them also met the end of input or an error, which later reads then report.
  void preload(std::span<const std::byte> bytes, std::error_code ended = {});

  // Runs the handshake to completion. Errors: mbedTLS codes (verification failures show in
  // engine().verify_failure()), asio::error::eof when the peer left mid-handshake.
  asio::awaitable<std::error_code> handshake();

  asio::awaitable<net::io_result> wait_readable();
  asio::awaitable<net::io_result> read_some(std::span<std::byte> buffer);
  asio::awaitable<std::error_code> write_all(std::span<const std::byte> data);
  // Mux: encrypts each span as its own record(s) and sends them all with one socket write,
  // so frames from many streams share records and syscalls. The spans must stay valid
  // until it completes. Fails like write_all.
  asio::awaitable<std::error_code> write_records(std::span<const std::span<const std::byte>> records);
  // Sends close_notify, then shuts down the socket's sending side. Reading goes on.
  asio::awaitable<std::error_code> shutdown_send();
  void close();

  const engine& tls() const { return engine_; }
  // Before the handshake: see engine::watch_steps.
  void watch_handshake_steps(engine::step_watch watch) { engine_.watch_steps(std::move(watch)); }
  net::generic_socket& socket() { return socket_; }
  // Ciphertext bytes received so far (zero for a probe that connected and left).
  std::uint64_t raw_bytes_in() const { return raw_in_; }
  // Records whose data has been read, at least (a record read in pieces counts once per
  // piece): read_some returns several records' data when they are already here.
  std::uint64_t records_in() const { return records_in_; }

 private:
  asio::awaitable<std::error_code> flush();
  asio::awaitable<std::error_code> fill();
  // Gives back the idle output buffers, then waits until the socket is readable.
  asio::awaitable<std::tuple<std::error_code>> wait_idle();
  std::error_code read_error(int mbedtls_rc) const;

  net::generic_socket socket_;
  engine engine_;
  std::vector<unsigned char> sending_;
  bool flushing_ = false;
  asio::steady_timer flush_done_;  // cancelled to wake writers waiting for a flush
  std::uint64_t raw_in_ = 0;
  std::uint64_t plain_in_ = 0;
  std::uint64_t records_in_ = 0;
  std::optional<int> deferred_rc_;  // what ended a batch of records in read_some
  // fill() waits for the socket before taking an input buffer unless a read is likely to
  // succeed at once: the socket was just seen readable, or the last read filled the buffer.
  bool expect_more_ = false;
  bool woken_ = false;  // wait_readable just saw the socket readable: fill reads without a wait
  std::error_code input_ended_;  // see preload
};

static_assert(net::byte_stream<tls_stream>);

}  // namespace tunnel::tls
