#include "mux/session.hpp"

#include "net/cancelled.hpp"
#include "ops/metrics.hpp"
#include "policy/peer_identity.hpp"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>
#include <random>

#include "mux/error.hpp"

namespace tunnel::mux {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using clock = std::chrono::steady_clock;

// Writers stop queueing beyond this (they wait for the writer to drain it): streams then
// take turns at about one frame each, and a fast stream cannot put megabytes ahead of a
// slow one's small request.
constexpr std::size_t outbound_limit = 256 * 1024;

std::uint64_t random_nonzero() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uint64_t v = 0;
  while (v == 0) v = rng();
  return v;
}

// tunnel-out serves many clients: each one's sessions grow their windows within its share,
// by the client's key (clients with one key are one client). tunnel-in's sessions all face
// the same tunnel-out, and in PSK mode clients cannot be told apart: no share then.
std::shared_ptr<window_budget> peer_share(const session_settings& settings, const tls::tls_stream& tls) {
  const auto& peer = tls.tls().peer();
  if (settings.client || !peer || !peer->psk.empty()) return nullptr;
  return window_budget::for_peer(policy::to_hex(peer->spki));
}

}  // namespace

session::session(tls::tls_stream& tls, session_settings settings)
    : tls_(tls),
      settings_(settings),
      peer_budget_(peer_share(settings, tls)),
      tuner_(peer_budget_ ? *peer_budget_ : window_budget::process()),
      writer_wake_(tls.socket().get_executor(), asio::steady_timer::time_point::max()),
      reader_wake_(tls.socket().get_executor(), asio::steady_timer::time_point::max()),
      started_(clock::now()),
      last_rx_(started_) {
  ops::metrics::get().mux_sessions_active.fetch_add(1, std::memory_order_relaxed);
}

session::~session() {
  end_streams(errc::connection_lost);
  end_flows(errc::connection_lost, "mux connection closed");
  auto& m = ops::metrics::get();
  m.mux_sessions_active.fetch_sub(1, std::memory_order_relaxed);
  m.mux_window_growth_bytes.fetch_sub(growth_reported_, std::memory_order_relaxed);
  if (ready_) m.mux_sessions_ready.fetch_sub(1, std::memory_order_relaxed);
}

void session::mark_ready() {
  if (ready_) return;
  ready_ = true;
  ops::metrics::get().mux_sessions_ready.fetch_add(1, std::memory_order_relaxed);
  send_pending_opens();
  notify_flows();
}

bool session::accepting() const { return !ended_ && !closing_ && !retiring() && failure_.empty(); }

bool session::usable() const {
  // Our own OPENs have no credit to wait for: while the connection does not drain, take no
  // streams well before the queue bound that ends a session whose peer does not read.
  return accepting() && streams_.size() < settings_.max_streams &&
         out_.size() < outbound_limit + settings_.reply_queue_limit / 2;
}

asio::awaitable<std::string> session::run() {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  running_ = true;
  // The client asks first: in TLS 1.3 a server's refusal of our certificate arrives only
  // after our handshake "succeeded", so the session is ready once the server has answered.
  if (settings_.client) {
    ping_outstanding_ = queue_ping();
  }
  // First on the connection, so it precedes our answer to the peer's first ping: by the
  // time the peer counts us as ready it knows whether we carry flows.
  if (settings_.carries_flows) {
    encode_datagram(out_, flows_hello_id, {});
    frame_ends_.push_back(out_.size());
  }
  // `||`: the first coroutine to return (each returns normally, recording any failure)
  // cancels the other two.
  co_await (reader() || writer() || keepalive());
  if (net::is_cancelled(co_await asio::this_coro::cancellation_state) && failure_.empty()) {
    failure_ = "cut at shutdown";
    stream_error_ = errc::cut_at_shutdown;
  }
  ended_ = true;
  end_streams(stream_error_ ? stream_error_ : make_error_code(errc::connection_lost));
  end_flows(stream_error_ ? stream_error_ : make_error_code(errc::connection_lost),
            failure_.empty() ? std::string_view("mux connection closed") : std::string_view(failure_));
  changed();
  co_return failure_.empty() ? std::string("closed") : failure_;
}

std::unique_ptr<stream> session::open(std::string_view service, std::string_view origin) {
  if (!usable() || next_id_ == 0 || next_id_ > max_id) return nullptr;
  auto s = std::make_unique<stream>(*this, next_id_++, writer_wake_.get_executor());
  encode_open(out_, s->id(), service, origin);
  frame_ends_.push_back(out_.size());
  streams_.emplace(s->id(), s.get());
  ++stats_.streams_opened;
  wake_writer();
  return s;
}

void session::goaway(reset_code code, std::string_view reason) {
  if (goaway_sent_ || ended_) return;
  goaway_sent_ = true;
  if (settings_.client) {
    encode_goaway(out_, last_peer_id_, code, reason);
    frame_ends_.push_back(out_.size());
  } else {
    // OPENs the client sent before our GOAWAY reached it are on their way: announce the
    // highest id (nothing failed), keep accepting, and ping. Frames arrive in order, so
    // once the pong is back every such OPEN has arrived, and only then are OPENs refused
    // and the session may close (HTTP/2's graceful shutdown, RFC 9113 6.8).
    encode_goaway(out_, max_id, code, reason);
    frame_ends_.push_back(out_.size());
    drain_ping_ = queue_ping();
    drain_started_ = clock::now();
  }
  wake_writer();
  changed();
  maybe_finish();
}

// ---- called by streams ------------------------------------------------------------------

bool session::outbound_full() const { return out_.size() >= outbound_limit; }

bool session::queue_data(stream& s, std::span<const std::byte> data) {
  if (outbound_full()) return false;
  encode_data(out_, s.id(), data);
  frame_ends_.push_back(out_.size());
  send_credit_ -= static_cast<std::int64_t>(data.size());
  wake_writer();
  return true;
}

void session::queue_fin(stream& s) {
  encode_fin(out_, s.id());
  frame_ends_.push_back(out_.size());
  wake_writer();
}

std::uint64_t session::queue_ping() {
  const std::uint64_t opaque = random_nonzero();
  encode_ping(out_, opaque, false);
  frame_ends_.push_back(out_.size());
  return opaque;
}

void session::queue_reset(std::uint32_t id, reset_code code, std::string_view reason) {
  if (ended_) return;
  encode_reset(out_, id, code, reason);
  frame_ends_.push_back(out_.size());
  wake_writer();
}

void session::consumed(stream& s, std::size_t n) {
  // Credit goes back once a quarter of the window has been taken (fewer WINDOW frames than
  // per-read updates, and the sender never idles waiting for credit on a fast path), with
  // the growth the tuner found since the last WINDOW frame (window_tuner.hpp).
  s.consumed_unacked_ += static_cast<std::uint32_t>(n);
  if (s.consumed_unacked_ >= s.window_ / 4 && !s.fin_received_) {
    const std::uint32_t growth = tuner_.stream_window() - s.window_;  // windows never shrink
    encode_window(out_, s.id(), s.consumed_unacked_ + growth);
    frame_ends_.push_back(out_.size());
    s.recv_window_ += s.consumed_unacked_ + growth;
    s.window_ += growth;
    stats_.receive_window = std::max(stats_.receive_window, s.window_);
    s.consumed_unacked_ = 0;
    wake_writer();
  }
  return_connection_credit(n);
}

void session::return_connection_credit(std::size_t n) {
  consumed_unacked_ += static_cast<std::uint32_t>(n);
  // Also at once when the peer's credit runs low: stalled streams may be holding the rest
  // of the window, and the others must not wait for a quarter that never comes.
  if (consumed_unacked_ < window_ / 4 && recv_window_ >= window_ / 4) return;
  const std::uint32_t growth = tuner_.connection_window() - window_;
  encode_window(out_, 0, consumed_unacked_ + growth);
  frame_ends_.push_back(out_.size());
  recv_window_ += consumed_unacked_ + growth;
  window_ += growth;
  consumed_unacked_ = 0;
  wake_writer();
}

void session::forget(stream& s) {
  // Bytes the relay never took still count against the connection window: give them back.
  const std::size_t unread = s.in_.size() - s.in_begin_;
  streams_.erase(s.id());
  if (unread > 0 && !ended_) return_connection_credit(unread);
  if (room_taken(s) && !ended_) wake_streams();  // woken for credit it never used
  changed();
  maybe_finish();
}

void session::drop(stream& s, std::error_code ec) {
  // The stream is over both ways (PROTOCOL.md): forget() gives what its relay has not taken
  // back to the connection window, and the bytes go, as TCP drops a reset connection's.
  forget(s);
  std::vector<std::byte>().swap(s.in_);  // (= {} would keep the capacity)
  s.in_begin_ = 0;
  s.fail(ec);
}

// ---- the three coroutines -------------------------------------------------------------

asio::awaitable<void> session::reader() {
  co_await asio::this_coro::throw_if_cancelled(false);
  // A frame is at most one record's plaintext and a read returns at most one record's
  // rest, so after compaction there is always room for one more read.
  std::vector<std::byte> acc(2 * max_frame_size);
  std::size_t filled = 0;
  for (;;) {
    const auto r = co_await tls_.read_some(std::span(acc).subspan(filled));
    if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    if (r.ec) {
      // close_notify after GOAWAY (or with nothing open) is the clean end. Answer with
      // ours before the socket closes: closing it with our own frames unsent would end the
      // peer's connection with a reset, which discards what it has not read yet.
      if (r.ec == asio::error::eof && (retiring() || streams_.empty())) {
        peer_closed_ = true;
        closing_ = true;
        wake_writer();
        while (!close_sent_ && failure_.empty()) {
          co_await reader_wake_.async_wait(as_result);
          if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
        }
        co_return;
      }
      fail(r.ec == asio::error::eof ? "the peer closed the connection" : "tunnel read: " + r.ec.message(),
           errc::connection_lost);
      co_return;
    }
    filled += r.bytes;
    stats_.bytes_received += r.bytes;
    stats_.records_received = tls_.records_in();  // never undercounts (see tls_stream)
    last_rx_ = clock::now();
    std::size_t begin = 0;
    for (;;) {
      const auto d = decode(std::span<const std::byte>(acc).subspan(begin, filled - begin));
      if (d.status == decode_status::need_more) break;
      if (d.status != decode_status::ok) {
        protocol_error(std::string("bad frame: ") + describe(d.status));
        co_return;
      }
      begin += d.consumed;
      if (!dispatch(d.f)) co_return;
    }
    if (begin > 0) {
      std::memmove(acc.data(), acc.data() + begin, filled - begin);
      filled -= begin;
    }
    // Answers to the peer's frames (PONG, RESET for refused OPENs, WINDOW for dropped DATA)
    // queue whether or not the peer reads them. Data stops at the outbound bound and
    // datagrams at theirs; past both with room for replies, the peer sends but does not read.
    if (out_.size() > outbound_limit + settings_.datagram_queue_limit + settings_.reply_queue_limit) {
      fail("the peer sends but does not read: " + std::to_string(out_.size()) + " bytes queued for it",
           errc::connection_lost);
      co_return;
    }
    check_rotation();
  }
}

asio::awaitable<void> session::writer() {
  co_await asio::this_coro::throw_if_cancelled(false);
  std::vector<std::span<const std::byte>> records;
  for (;;) {
    if (close_sent_) out_.clear(), frame_ends_.clear();  // nothing may follow close_notify
    if (out_.empty()) {
      if (!failure_.empty()) co_return;
      if (closing_ && !close_sent_) {
        // Everything queued is out: end with close_notify so the peer sees a clean end.
        co_await tls_.shutdown_send();
        close_sent_ = true;
        close_sent_at_ = clock::now();
        reader_wake_.cancel();
        if (peer_closed_) co_return;
        // Then wait for the peer's close_notify (the reader returns on it): closing the
        // socket while the peer still sends would reset the connection under its unread
        // bytes. The keepalive bounds the wait.
      }
      co_await writer_wake_.async_wait(as_result);
      if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
      continue;
    }
    sending_.swap(out_);
    sending_ends_.swap(frame_ends_);
    datagram_bytes_queued_ = 0;  // those datagrams are on their way: the queue is empty again
    // Pack whole frames into records of at most one record's plaintext each.
    records.clear();
    std::size_t record_begin = 0, previous_end = 0;
    for (const std::size_t end : sending_ends_) {
      if (end - record_begin > max_frame_size) {
        records.emplace_back(sending_.data() + record_begin, previous_end - record_begin);
        record_begin = previous_end;
      }
      previous_end = end;
    }
    if (previous_end > record_begin) records.emplace_back(sending_.data() + record_begin, previous_end - record_begin);
    const auto ec = co_await tls_.write_records(records);
    if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    if (ec) {
      fail("tunnel write: " + ec.message(), errc::connection_lost);
      co_return;
    }
    stats_.bytes_sent += sending_.size();
    stats_.records_sent += records.size();
    sending_.clear();
    sending_ends_.clear();
    wake_streams();  // the queue drained: writers blocked on it may go on
    check_rotation();
  }
}

asio::awaitable<void> session::keepalive() {
  co_await asio::this_coro::throw_if_cancelled(false);
  asio::steady_timer tick(co_await asio::this_coro::executor);
  const auto k = settings_.keepalive;
  // Silence of k/2 sends a ping; silence of k ends the session: a peer that answers at
  // all answers a ping within half the bound.
  const auto period = k.count() > 0 ? std::clamp<std::chrono::milliseconds>(k / 4, 10ms, 1s) : 1s;
  for (;;) {
    tick.expires_after(period);
    co_await tick.async_wait(as_result);
    if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    check_rotation();
    if (close_sent_ && clock::now() - close_sent_at_ > 5s) co_return;  // the peer never answered
    if (drain_ping_ != 0 && clock::now() - drain_started_ >= settings_.drain_limit) {
      // A client that keeps the drain ping unanswered does not keep the connection open for
      // new streams: OPENs from now on are refused, and the session ends with its streams.
      drain_ping_ = 0;
      maybe_finish();
    }
    if (k.count() == 0) continue;
    const auto silent = clock::now() - last_rx_;
    if (silent >= k) {
      fail("keepalive timeout: no answer from the peer for " + std::to_string(k.count()) + "ms",
           errc::keepalive_timeout);
      co_return;
    }
    if (silent >= k / 2 && ping_outstanding_ == 0) {
      ping_outstanding_ = queue_ping();
      wake_writer();
    }
  }
}

// ---- frames from the peer ---------------------------------------------------------------

bool session::peer_may_open(std::uint32_t id, std::uint32_t last, const char* frame_name, const char* id_kind) {
  // Only tunnel-in opens streams and flows, each with an id above the last one.
  if (settings_.client) {
    protocol_error(std::string(frame_name) + " from the server");
    return false;
  }
  if (id <= last) {
    protocol_error(std::string(id_kind) + " id not increasing");
    return false;
  }
  if (id > max_id) {
    protocol_error(std::string(id_kind) + " id above 2^31-1");
    return false;
  }
  return true;
}

bool session::dispatch(const frame& f) {
  switch (f.type) {
    case frame_type::open:
      if (!peer_may_open(f.stream, last_peer_id_, "OPEN", "stream")) return false;
      on_open(f);
      break;
    case frame_type::data:
      on_data(f);
      break;
    case frame_type::fin:
      if (auto it = streams_.find(f.stream); it != streams_.end()) it->second->deliver_fin();
      break;
    case frame_type::reset:
      if (auto it = streams_.find(f.stream); it != streams_.end()) {
        drop(*it->second, error_for(f.code));
      }
      break;
    case frame_type::window:
      on_window(f);
      break;
    case frame_type::datagram:
      on_datagram(f);
      break;
    case frame_type::flow_open:
      if (!peer_may_open(f.stream, last_peer_flow_, "FLOW_OPEN", "flow")) return false;
      on_flow_open(f);
      break;
    case frame_type::flow_close:
      on_flow_close(f);
      break;
    case frame_type::ping:
      encode_ping(out_, f.opaque, true);
      frame_ends_.push_back(out_.size());
      wake_writer();
      break;
    case frame_type::pong:
      if (drain_ping_ != 0 && f.opaque == drain_ping_) {
        drain_ping_ = 0;  // every OPEN sent before the client saw our GOAWAY is in
        maybe_finish();
      }
      if (probe_ping_ != 0 && f.opaque == probe_ping_) {
        probe_ping_ = 0;
        tuner_.probe_answered(clock::now());
        report_window_growth();
      }
      if (f.opaque == ping_outstanding_) {
        ping_outstanding_ = 0;
        if (!ready_) {
          mark_ready();
          changed();
        }
      }
      break;
    case frame_type::goaway:
      on_goaway(f);
      break;
  }
  return failure_.empty();
}

void session::on_open(const frame& f) {
  last_peer_id_ = f.stream;
  // The peer's first stream proves it accepted us, like a pong does.
  mark_ready();
  // Sent after the client knew of our GOAWAY, or after its own (it promised no more).
  if ((goaway_sent_ && drain_ping_ == 0) || goaway_received_) {
    queue_reset(f.stream, reset_code::shutdown, "tunnel-out is shutting down");
    return;
  }
  if (streams_.size() >= settings_.max_streams || !on_accept_) {
    queue_reset(f.stream, reset_code::limit, "too many streams on this connection");
    return;
  }
  auto s = std::make_unique<stream>(*this, f.stream, writer_wake_.get_executor());
  s->service_ = std::string(f.service);
  s->origin_ = std::string(f.origin);
  streams_.emplace(f.stream, s.get());
  ++stats_.streams_opened;
  on_accept_(std::move(s));
}

void session::on_data(const frame& f) {
  const auto n = static_cast<std::int64_t>(f.payload.size());
  recv_window_ -= n;
  if (recv_window_ < 0) {
    protocol_error("peer exceeded the connection window");
    return;
  }
  auto it = streams_.find(f.stream);
  if (it == streams_.end()) {
    // A stream we already dropped: its bytes still used connection credit; give it back.
    // (Not measured by the tuner: only bytes a reader will take may grow windows.)
    return_connection_credit(static_cast<std::size_t>(n));
    return;
  }
  stream& s = *it->second;
  if (s.fin_received_) {
    // The peer said its direction had ended: bytes after that are no part of the stream,
    // and a peer that sends them is not following the protocol.
    protocol_error("DATA after FIN on stream " + std::to_string(f.stream));
    return;
  }
  if (n > s.recv_window_) {
    protocol_error("peer exceeded a stream window");
    return;
  }
  measure(s, f.payload.size());
  s.deliver(f.payload);
}

void session::measure(stream& s, std::size_t n) {
  if (tuner_.probing()) {
    if (s.probe_number_ != tuner_.probe_number()) {  // the first DATA since this probe left
      s.probe_number_ = tuner_.probe_number();
      s.probe_bytes_ = 0;
    }
    s.probe_bytes_ += n;
    tuner_.stream_progress(s.probe_bytes_);
  } else if (tuner_.on_data(last_rx_)) {
    probe_ping_ = queue_ping();
    tuner_.probe_sent(last_rx_);
    wake_writer();
  }
}

void session::report_window_growth() {
  // The process's gauge of window growth: this session's share, as it changes.
  const auto taken = static_cast<std::int64_t>(tuner_.budget_taken());
  ops::metrics::get().mux_window_growth_bytes.fetch_add(taken - growth_reported_, std::memory_order_relaxed);
  growth_reported_ = taken;
  if (tuner_.refused() > 0 && !growth_refused_) {
    growth_refused_ = true;
    ops::metrics::get().mux_window_growth_refused.fetch_add(1, std::memory_order_relaxed);
  }
}

void session::on_window(const frame& f) {
  if (f.stream == 0) {
    send_credit_ += f.increment;
    if (send_credit_ > max_window) {
      protocol_error("connection window overflow");
      return;
    }
    wake_streams();
    return;
  }
  auto it = streams_.find(f.stream);
  if (it == streams_.end()) return;
  stream& s = *it->second;
  s.send_credit_ += f.increment;
  if (s.send_credit_ > max_window) {
    protocol_error("stream window overflow");
    return;
  }
  s.writable_.cancel();
}

void session::on_goaway(const frame& f) {
  // Only a GOAWAY that says something new is acted on: the first, or one that takes back
  // streams an earlier one let through. A peer repeating it costs no scan of the streams.
  const bool news = !goaway_received_ || f.last_stream < goaway_last_stream_ || f.code == reset_code::protocol;
  if (!news) return;
  goaway_received_ = true;
  goaway_last_stream_ = f.last_stream;
  // The peer found us breaking the protocol (an older peer meeting frames it does not know,
  // most likely): say so, rather than "closed" when it hangs up.
  if (f.code == reset_code::protocol) {
    fail("the peer reported a protocol error: " + std::string(f.reason), errc::protocol);
    return;
  }
  if (settings_.client) {
    // Streams the server never saw will never be served: fail them now.
    std::vector<stream*> unseen;
    for (auto& [id, s] : streams_)
      if (id > f.last_stream) unseen.push_back(s);
    for (stream* s : unseen) drop(*s, errc::peer_shutdown);
  }
  changed();
  maybe_finish();
}

// ---- state ------------------------------------------------------------------------------

void session::fail(std::string reason, std::error_code for_streams) {
  if (!failure_.empty()) return;
  failure_ = std::move(reason);
  stream_error_ = for_streams;
  wake_writer();
  changed();
}

void session::protocol_error(std::string reason) {
  encode_goaway(out_, last_peer_id_, reset_code::protocol, reason);
  frame_ends_.push_back(out_.size());
  fail("mux protocol error: " + reason, errc::protocol);
}

void session::wake_writer() { writer_wake_.cancel(); }

void session::wait_for_room(stream& s, std::size_t wanted, bool first_in_line) {
  s.room_wanted_ = wanted;
  if (s.waiting_for_room_) return;  // still listed (it was woken by its own WINDOW meanwhile)
  s.waiting_for_room_ = true;
  if (first_in_line) waiting_for_room_.push_front(s.id());
  else waiting_for_room_.push_back(s.id());
}

bool session::room_taken(stream& s) {
  if (s.room_promised_ == 0) return false;
  room_promised_ -= s.room_promised_;
  s.room_promised_ = 0;
  return true;
}

void session::wake_streams() {
  // First come, first served, as many as the connection credit can serve: each woken stream
  // is counted on for what it wants to send (room_promised_) until it runs. A peer granting
  // credit a few bytes at a time then wakes one stream per grant, not every stream that
  // waits; and credit enough for all wakes all at once (a stream counts for at most what the
  // outbound queue takes, so streams with much to send share the writer's passes). A woken
  // stream that finds the credit gone (another stream took it) waits again at the front.
  // The writer wakes the next ones after each send, and forget() (or a woken writer that is
  // cancelled) when a woken stream goes, so credit is never stranded.
  std::int64_t left = send_credit_ - room_promised_;
  while (left > 0 && !waiting_for_room_.empty()) {
    const std::uint32_t id = waiting_for_room_.front();
    waiting_for_room_.pop_front();
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    stream& s = *it->second;
    s.waiting_for_room_ = false;
    // Listed, then woken by its own WINDOW and done, or waiting for that WINDOW now: the
    // connection's credit is no use to it (it lists itself again once it has its own).
    if (!s.writer_suspended_ || s.send_credit_ <= 0) continue;
    // What it wants, up to what the outbound queue takes before the writer must run.
    const std::int64_t cost = std::clamp<std::int64_t>(static_cast<std::int64_t>(s.room_wanted_), 1,
                                                       std::min<std::int64_t>(left, outbound_limit));
    s.room_promised_ += cost;
    room_promised_ += cost;
    left -= cost;
    s.writable_.cancel();
    ++stats_.room_wakeups;
  }
}

void session::maybe_finish() {
  if (retiring() && streams_.empty() && !closing_ && drain_ping_ == 0) {
    closing_ = true;
    wake_writer();
  }
}

void session::check_rotation() {
  if (!settings_.client || retiring() || closing_) return;
  const bool by_bytes = settings_.rotate_bytes > 0 &&
                        stats_.bytes_sent + stats_.bytes_received >= settings_.rotate_bytes;
  const bool by_records = settings_.rotate_records > 0 &&
                          std::max(stats_.records_sent, stats_.records_received) >= settings_.rotate_records;
  const bool by_age = settings_.rotate_age.count() > 0 && clock::now() - started_ >= settings_.rotate_age;
  if (by_bytes || by_records || by_age) goaway(reset_code::cancel, "rotation");
}

void session::changed() {
  if (on_change_) on_change_();
}

void session::end_streams(std::error_code ec) {
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) s->fail(ec);
}

}  // namespace tunnel::mux
