#include "mux/stream.hpp"

#include "net/cancelled.hpp"
#include "ops/metrics.hpp"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>
#include <utility>

#include "mux/session.hpp"

namespace tunnel::mux {
namespace {
constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
// A receive buffer up to this size is kept while partly read; a larger one shrinks to its
// unread rest once that is under a quarter of it.
constexpr std::size_t keep_capacity = 4 * max_frame_size;

// Asio 1.22: a cancelled timer wait completes normally; look at the coroutine's state.
asio::awaitable<bool> cancelled() {
  co_return net::is_cancelled(co_await asio::this_coro::cancellation_state);
}
}  // namespace

stream::stream(session& owner, std::uint32_t id, asio::any_io_executor ex)
    : session_(&owner),
      id_(id),
      readable_(ex, asio::steady_timer::time_point::max()),
      writable_(ex, asio::steady_timer::time_point::max()) {
  ops::metrics::get().mux_streams_active.fetch_add(1, std::memory_order_relaxed);
}

stream::~stream() {
  leave(reset_code::cancel, "stream closed");
  ops::metrics::get().mux_streams_active.fetch_sub(1, std::memory_order_relaxed);
}

asio::awaitable<net::io_result> stream::read_some(std::span<std::byte> buffer) {
  for (;;) {
    if (in_begin_ < in_.size()) {
      const std::size_t n = std::min(buffer.size(), in_.size() - in_begin_);
      if (n == 0) co_return net::io_result{{}, 0};  // an empty buffer asks "readable?" (no memcpy from null)
      std::memcpy(buffer.data(), in_.data() + in_begin_, n);
      in_begin_ += n;
      if (in_begin_ == in_.size()) {
        std::vector<std::byte>().swap(in_);  // drained: an idle stream keeps no buffer (= {} keeps it)
        in_begin_ = 0;
      } else if (in_.capacity() > keep_capacity && in_.size() - in_begin_ < in_.capacity() / 4) {
        // Most of a large buffer taken: keep the rest only. A relay that took the bytes but
        // cannot pass them on (its target stalls) then holds what is unread, which the
        // windows bound, not the buffer the stream once needed.
        in_ = std::vector<std::byte>(in_.begin() + static_cast<std::ptrdiff_t>(in_begin_), in_.end());
        in_begin_ = 0;
      }
      if (session_) session_->consumed(*this, n);
      co_return net::io_result{{}, n};
    }
    // The error first: a RESET after the FIN dropped what was unread, and the relay must
    // not take that for a clean end.
    if (error_) co_return net::io_result{error_, 0};
    if (fin_received_) co_return net::io_result{asio::error::eof, 0};
    if (!session_) co_return net::io_result{errc::connection_lost, 0};
    co_await readable_.async_wait(as_result);
    if (co_await cancelled()) co_return net::io_result{asio::error::operation_aborted, 0};
  }
}

asio::awaitable<std::error_code> stream::write_all(std::span<const std::byte> data) {
  bool woken_for_room = false;  // woken by wake_streams: if it waits again, it is next in line
  while (!data.empty()) {
    if (error_) co_return error_;
    if (!session_) co_return errc::connection_lost;
    if (fin_sent_) co_return errc::stream_closed;
    const std::int64_t credit = std::min(send_credit_, session_->connection_credit());
    if (credit > 0) {
      const auto n = std::min({data.size(), static_cast<std::size_t>(credit), max_payload});
      // The session refuses while its outbound queue is full: wait for the writer then.
      if (session_->queue_data(*this, data.first(n))) {
        send_credit_ -= static_cast<std::int64_t>(n);
        data = data.subspan(n);
        woken_for_room = false;  // it had its turn: if it waits again, it queues behind the others
        continue;
      }
    }
    // No credit (the peer's buffers are full: its reader is slow) or a full queue: wait to
    // be woken by a WINDOW frame, a drained queue, or the end of the stream. Short of this
    // stream's own credit only its WINDOW frame helps; else the session wakes it.
    // Woken for credit that another stream took meanwhile: next in line. (Waiting for the
    // outbound queue instead, it goes to the back: the streams share the writer's passes.)
    if (send_credit_ > 0)
      session_->wait_for_room(*this, data.size(), woken_for_room && session_->connection_credit() <= 0);
    writer_suspended_ = true;
    co_await writable_.async_wait(as_result);
    writer_suspended_ = false;
    woken_for_room = session_ && session_->room_taken(*this);
    if (co_await cancelled()) {
      if (woken_for_room && session_) session_->wake_streams();  // the credit counted on it goes to the next
      co_return asio::error::operation_aborted;
    }
  }
  co_return std::error_code{};
}

asio::awaitable<std::error_code> stream::shutdown_send() {
  if (error_) co_return error_;
  if (!session_) co_return errc::connection_lost;
  if (!fin_sent_) {
    fin_sent_ = true;
    session_->queue_fin(*this);
  }
  co_return std::error_code{};
}

void stream::close() {
  leave(reset_code::cancel, "stream closed");
  if (!error_) error_ = errc::stream_closed;
  wake();
}

void stream::reset(reset_code code, std::string_view reason) {
  leave(code, reason);
  if (!error_) error_ = errc::stream_closed;
  wake();
}

void stream::leave(reset_code code, std::string_view reason) {
  if (!session_) return;
  // A stream that ended both ways needs no RESET; anything else tells the peer to drop it.
  if (!error_ && !ended_cleanly()) session_->queue_reset(id_, code, reason);
  session* s = session_;
  session_ = nullptr;
  s->forget(*this);
}

void stream::deliver(std::span<const std::byte> data) {
  // The taken prefix goes once it is half of the buffer, or before the buffer would grow.
  if (in_begin_ > 0 && (in_begin_ >= in_.size() / 2 || in_.size() + data.size() > in_.capacity())) {
    in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(in_begin_));
    in_begin_ = 0;
  }
  // Capacity doubles as usual, up to one and a half windows: what is unread is at most the
  // window (a peer sending more is a protocol error before it gets here), and the half
  // window of room spares a relay that lags by most of a window from moving all it has
  // not read for every frame that arrives.
  const std::size_t needed = in_.size() + data.size();
  if (needed > in_.capacity())
    in_.reserve(std::max(needed, std::min<std::size_t>(2 * in_.capacity(), std::size_t{window_} * 3 / 2)));
  in_.insert(in_.end(), data.begin(), data.end());
  recv_window_ -= static_cast<std::int64_t>(data.size());
  readable_.cancel();
}

void stream::deliver_fin() {
  fin_received_ = true;
  readable_.cancel();
}

void stream::fail(std::error_code ec) {
  if (!error_) error_ = ec;
  session_ = nullptr;
  wake();
  if (auto call = std::exchange(on_failed_, nullptr)) call();
}

void stream::wake() {
  readable_.cancel();
  writable_.cancel();
}

}  // namespace tunnel::mux
