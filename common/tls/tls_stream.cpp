#include "tls/tls_stream.hpp"

#include <asio/buffer.hpp>
#include <asio/this_coro.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include <cstring>
#include <utility>

#include "net/cancelled.hpp"
#include "net/immediate_io.hpp"
#include "tls/error.hpp"

namespace tunnel::tls {
namespace {
constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_record_plaintext = 16384;
// Header, nonce, tag and TLS 1.3's content type, with room to spare, per record.
constexpr std::size_t record_overhead = 64;
// Output capacity a connection keeps between writes: one full record and its overhead.
constexpr std::size_t kept_output_capacity = max_record_plaintext + 1024;
}

std::error_code tls_stream::read_error(int rc) const {
  if (engine_.record_overflow()) return make_error_code(tls_errc::record_overflow);
  // In TLS 1.3 the client finishes its handshake before the server has judged the client
  // certificate; a refusal then arrives as an alert under the handshake keys, which reads
  // as a bad MAC or an alert before any data. Say what it most likely means.
  const bool refusal = rc == MBEDTLS_ERR_SSL_INVALID_MAC || rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE;
  if (refusal && plain_in_ == 0 && engine_.is_client()) return make_error_code(tls_errc::refused_after_handshake);
  return make_mbedtls_error(rc);
}

tls_stream::tls_stream(net::generic_socket socket, std::shared_ptr<const tls_context> context, bool without_alpn)
    : socket_(std::move(socket)),
      engine_(std::move(context), without_alpn),
      flush_done_(socket_.get_executor(), asio::steady_timer::time_point::max()) {}

void tls_stream::preload(std::span<const std::byte> bytes, std::error_code ended) {
  input_ended_ = ended;
  while (!bytes.empty()) {
    auto space = engine_.input_space();
    const std::size_t n = std::min(space.size(), bytes.size());
    std::memcpy(space.data(), bytes.data(), n);
    engine_.commit_input(n);
    raw_in_ += n;
    bytes = bytes.subspan(n);
    if (n == 0) break;  // the engine holds a full buffer already: cannot happen before a handshake
  }
  expect_more_ = true;
}

asio::awaitable<std::error_code> tls_stream::flush() {
  // Reads and writes run in two coroutines and both may produce output; only one may write
  // to the socket at a time, and whoever flushes sends everything queued meanwhile.
  for (;;) {
    if (flushing_) {
      co_await flush_done_.async_wait(as_result);
      // Woken by the flusher, or cancelled (Asio 1.22 does not throw on its own then).
      if (net::is_cancelled(co_await asio::this_coro::cancellation_state))
        co_return asio::error::operation_aborted;
      continue;
    }
    if (engine_.output().empty()) co_return std::error_code{};
    flushing_ = true;
    sending_.swap(engine_.output());
    const auto ec = co_await net::write_soon(socket_, asio::buffer(sending_));
    // A burst leaves a large buffer behind: give it back rather than keep it per connection.
    if (sending_.capacity() > kept_output_capacity) std::vector<unsigned char>().swap(sending_);
    else sending_.clear();
    flushing_ = false;
    flush_done_.cancel();
    if (ec) co_return ec;
  }
}

asio::awaitable<std::tuple<std::error_code>> tls_stream::wait_idle() {
  // The handshake flights leave both queues with capacity (about 1 KiB on either side):
  // a connection about to wait for its peer gives it back. Not while a flush is sending
  // from `sending_`, nor with output queued.
  if (!flushing_) std::vector<unsigned char>().swap(sending_);
  if (engine_.output().empty()) std::vector<unsigned char>().swap(engine_.output());
  // Not a coroutine itself: an idle connection holds no extra frame while it waits.
  return socket_.async_wait(net::generic_socket::wait_read, as_result);
}

asio::awaitable<std::error_code> tls_stream::fill() {
  if (input_ended_) co_return input_ended_;
  bool readable = std::exchange(woken_, false);
  if (!expect_more_) {  // an idle connection waits here holding no input buffer
    auto [ec] = co_await wait_idle();
    if (ec) co_return ec;
    readable = true;
  }
  auto space = engine_.input_space();
  // Just reported readable: read without a trip through the event loop. (After a full
  // buffer, the read goes through it: a busy connection must let others run.)
  const auto [ec, n] = co_await net::read_soon(socket_, asio::buffer(space.data(), space.size()), readable);
  expect_more_ = !ec && n == space.size();
  engine_.commit_input(ec ? 0 : n);
  if (ec) co_return ec;
  raw_in_ += n;
  co_return std::error_code{};
}

asio::awaitable<net::io_result> tls_stream::wait_readable() {
  if (engine_.has_buffered_input()) co_return net::io_result{};
  auto [ec] = co_await wait_idle();
  expect_more_ = woken_ = !ec;  // the next fill reads at once (and reports any error itself)
  co_return net::io_result{ec, 0};
}

asio::awaitable<std::error_code> tls_stream::handshake() {
  for (;;) {
    const int rc = engine_.handshake();
    // Send whatever the step produced, including a fatal alert that tells the peer why.
    const auto fec = co_await flush();
    if (rc == 0) co_return fec;
    if (rc != MBEDTLS_ERR_SSL_WANT_READ)
      co_return engine_.record_overflow() ? make_error_code(tls_errc::record_overflow) : make_mbedtls_error(rc);
    if (fec) co_return fec;
    if (auto ec = co_await fill()) co_return ec;
  }
}

asio::awaitable<net::io_result> tls_stream::read_some(std::span<std::byte> buffer) {
  std::size_t got = 0;
  for (;;) {
    const int rc = deferred_rc_ ? *std::exchange(deferred_rc_, std::nullopt) : engine_.read(buffer.subspan(got));
    if (!engine_.output().empty()) {
      if (auto ec = co_await flush()) co_return net::io_result{ec, 0};
    }
    if (rc > 0) {
      got += static_cast<std::size_t>(rc);
      plain_in_ += static_cast<std::size_t>(rc);
      ++records_in_;
      // Records already received decrypt into the same read, without touching the socket:
      // one write on the other side for several records.
      if (got < buffer.size() && engine_.has_buffered_input()) continue;
      co_return net::io_result{{}, got};
    }
    if (got > 0) {  // the data first; what ended the batch is the next call's result
      if (rc != MBEDTLS_ERR_SSL_WANT_READ) deferred_rc_ = rc;
      co_return net::io_result{{}, got};
    }
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) co_return net::io_result{asio::error::eof, 0};
    if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != 0) co_return net::io_result{read_error(rc), 0};
    if (rc == 0) co_return net::io_result{make_error_code(tls_errc::truncated), 0};
    if (auto ec = co_await fill()) {
      // The transport ended with no close_notify: a truncation, not a clean end.
      if (ec == asio::error::eof) ec = make_error_code(tls_errc::truncated);
      co_return net::io_result{ec, 0};
    }
  }
}

asio::awaitable<std::error_code> tls_stream::write_all(std::span<const std::byte> data) {
  const std::span<const std::byte> one[] = {data};
  const std::span<const std::span<const std::byte>> records(one);  // named: see legacy_leg.hpp on GCC 12
  co_return co_await write_records(records);
}

asio::awaitable<std::error_code> tls_stream::write_records(std::span<const std::span<const std::byte>> records) {
  // engine::write never blocks (its output queue grows): encrypt everything, flush once.
  // The queue is sized up front (it may have been given back while idle): one allocation
  // per batch, not a doubling copy per record.
  std::size_t bytes = 0;
  for (auto data : records) bytes += data.size() + record_overhead * (data.size() / max_record_plaintext + 1);
  engine_.output().reserve(engine_.output().size() + bytes);
  for (auto data : records) {
    while (!data.empty()) {
      const int rc = engine_.write(data);
      if (rc < 0) co_return make_mbedtls_error(rc);
      data = data.subspan(static_cast<std::size_t>(rc));
    }
  }
  co_return co_await flush();
}

asio::awaitable<std::error_code> tls_stream::shutdown_send() {
  const int rc = engine_.close_notify();
  if (rc != 0) co_return make_mbedtls_error(rc);
  if (auto ec = co_await flush()) co_return ec;
  std::error_code ec;
  socket_.shutdown(net::generic_socket::shutdown_send, ec);
  co_return ec;
}

void tls_stream::close() {
  std::error_code ignored;
  socket_.close(ignored);
  flush_done_.cancel();
}

}  // namespace tunnel::tls
