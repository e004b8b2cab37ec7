#pragma once
// One legacy connection carried inside a mux session, in the byte_stream shape so the pump
// moves its bytes unchanged. Owned (std::unique_ptr) by the coroutine that relays it; lives
// on its session's thread. If the session ends first, the stream fails with the reason and
// forgets the session; if the stream goes first, it leaves the session (sending RESET
// unless both directions ended cleanly).
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mux/error.hpp"
#include "mux/frame.hpp"
#include "net/stream.hpp"

namespace tunnel::mux {

class session;

class stream {
 public:
  stream(session& owner, std::uint32_t id, asio::any_io_executor ex);
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  // byte_stream. read_some fails with the peer's RESET reason or connection_lost; it takes
  // bytes from this stream's receive buffer and returns window credit as they are taken.
  // A read of nothing: returns once bytes, the FIN or an error are there.
  asio::awaitable<net::io_result> wait_readable() { return read_some({}); }
  asio::awaitable<net::io_result> read_some(std::span<std::byte> buffer);
  // Waits for stream and connection credit (the peer's free buffer) before queueing.
  asio::awaitable<std::error_code> write_all(std::span<const std::byte> data);
  asio::awaitable<std::error_code> shutdown_send();  // FIN
  void close();                                       // RESET(cancel) unless ended cleanly

  // Ends the stream with a reason the peer sees (refused, unreachable, timeout, ...).
  void reset(reset_code code, std::string_view reason);

  // `call` runs once, on the session's thread, when the stream fails from outside: the
  // peer's RESET or the session's end (not this side's own close or reset). E.g. to stop
  // dialling a target for a stream already gone.
  void on_failed(std::function<void()> call) { on_failed_ = std::move(call); }
  // It has: what the relay reads or writes next fails, with error().
  bool failed() const { return static_cast<bool>(error_); }
  std::error_code error() const { return error_; }

  std::uint32_t id() const { return id_; }
  const std::string& service() const { return service_; }
  const std::string& origin() const { return origin_; }  // the legacy client's address, as tunnel-in saw it
  // Bytes of memory this stream holds for received data (read or not yet).
  std::size_t receive_buffer_capacity() const { return in_.capacity(); }

 private:
  friend class session;
  // Called by the session's reader (same thread).
  void deliver(std::span<const std::byte> data);
  void deliver_fin();
  void fail(std::error_code ec);  // also forgets the session
  void wake();
  bool ended_cleanly() const { return fin_sent_ && fin_received_ && in_begin_ == in_.size(); }
  void leave(reset_code code, std::string_view reason);

  session* session_;
  std::uint32_t id_;
  std::string service_, origin_;
  // Receive side: bytes the peer sent that the relay has not taken yet (at most our window).
  std::vector<std::byte> in_;
  std::size_t in_begin_ = 0;
  std::int64_t recv_window_ = initial_stream_window;  // what the peer may still send
  std::uint32_t consumed_unacked_ = 0;                // taken, not yet returned as credit
  std::uint32_t window_ = initial_stream_window;      // granted so far (grows with the tuner)
  std::uint32_t probe_number_ = 0;                    // the tuner's probe probe_bytes_ counts for
  std::uint64_t probe_bytes_ = 0;
  bool fin_received_ = false;
  // Send side.
  std::int64_t send_credit_ = initial_stream_window;
  bool fin_sent_ = false;
  bool waiting_for_room_ = false;  // listed in the session's waiting_for_room_ (once at most)
  bool writer_suspended_ = false;  // write_all waits for credit or room
  std::size_t room_wanted_ = 0;    // what write_all had left to send when it listed itself
  std::int64_t room_promised_ = 0; // connection credit wake_streams counted on it using
  std::error_code error_;
  std::function<void()> on_failed_;
  // Woken (cancelled) when data, credit, FIN or an error arrives; waits never expire.
  asio::steady_timer readable_, writable_;
};

static_assert(net::byte_stream<stream>);

}  // namespace tunnel::mux
