#pragma once
// A mux session: many streams over one authenticated TLS connection (PROTOCOL.md).
// One reader, one writer and one keepalive coroutine per session, all on the session's
// thread, so nothing here takes a lock. The writer batches: whatever frames are queued when
// it wakes are packed into as few TLS records as fit and sent with one socket write.
//
// Ownership: the session borrows the tls_stream (the caller keeps both alive until run()
// returns) and never owns streams or flows; they register themselves by id.
// UDP flows (flow.hpp) ride the same connection as DATAGRAM frames: no credit, a bounded
// queue of their own, dropped rather than delayed.
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mux/flow.hpp"
#include "mux/frame.hpp"
#include "mux/stream.hpp"
#include "mux/window_tuner.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::mux {

using namespace std::chrono_literals;

struct session_settings {
  bool client = true;                            // tunnel-in opens streams, tunnel-out accepts
  std::chrono::milliseconds keepalive = 15s;     // silence that makes a peer dead (0: never)
  std::uint64_t rotate_bytes = 0;                // retire after this many bytes either way (0: never)
  std::chrono::milliseconds rotate_age{0};       // retire after this long (0: never)
  // Records sent or received before retiring: AES-GCM's per-key limit in TLS 1.3 is 2^24.5
  // records (RFC 8446 5.5) and mbedTLS 3.6 has no KeyUpdate, so a connection is replaced
  // well before: a third of it.
  std::uint64_t rotate_records = 1ull << 23;
  std::size_t max_streams = 1024;                // streams at once on one session
  // UDP flows at once on one session. Generous: tunnel-out's --max-flows bounds what a flow
  // really costs (a socket), and tunnel-in's flows of a service share few connections.
  std::size_t max_flows = 65536;
  // Bytes of DATAGRAM frames queued for the writer at most; more datagrams are dropped
  // (they never wait, and never hold up streams).
  std::size_t datagram_queue_limit = 256 * 1024;
  // Bytes of other frames queued at most beyond data and datagrams: our answers to the
  // peer's frames (PONG, RESET, WINDOW) and our own OPEN, FIN, RESET (a thousand streams
  // opened and reset while the connection is slow take about 700 KiB). More, and the peer
  // is sending without reading: the session fails rather than grow its queue without bound.
  std::size_t reply_queue_limit = 1024 * 1024;
  // Server: how long after GOAWAY the client may take to answer the drain ping (until then
  // OPENs it sent before seeing the GOAWAY are still taken); past it, OPENs are refused.
  std::chrono::milliseconds drain_limit = 5s;
  // This side understands UDP flows and says so with the flows hello (false: behave like
  // a version-1 peer, for tests).
  bool carries_flows = true;
};

struct session_stats {
  std::uint64_t bytes_sent = 0, bytes_received = 0;  // plaintext, frames included
  std::uint64_t records_sent = 0, records_received = 0;
  std::uint64_t streams_opened = 0;
  std::uint64_t flows_opened = 0;
  std::uint64_t datagrams_queue_full = 0;   // dropped: the datagram queue was at its bound
  std::uint64_t datagrams_unknown_flow = 0; // dropped: for a flow this side does not know
  std::uint64_t room_wakeups = 0;           // streams woken that waited for room (queue, connection credit)
  std::uint32_t receive_window = initial_stream_window;  // the largest granted to a stream (window_tuner.hpp)
};

class session {
 public:
  // Called for each stream the peer opens (tunnel-out); takes ownership of the stream.
  using accept_handler = std::function<void(std::unique_ptr<stream>)>;
  // Called for each UDP flow the peer opens (tunnel-out); takes ownership of the flow. It
  // must set the flow's handlers before returning: datagrams may follow in the same read.
  using flow_accept_handler = std::function<void(std::unique_ptr<flow>)>;

  session(tls::tls_stream& tls, session_settings settings);
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // Runs until the connection ends: an error, a keepalive timeout, cancellation, or a
  // clean close after GOAWAY once no stream is left. Never throws for I/O errors. Every
  // stream still registered then fails. Returns the reason ("closed" when clean).
  asio::awaitable<std::string> run();

  // tunnel-in: a new stream (OPEN queued, data may follow at once). nullptr when the
  // session no longer takes streams (GOAWAY either way, ended, full).
  std::unique_ptr<stream> open(std::string_view service, std::string_view origin);
  void on_accept(accept_handler h) { on_accept_ = std::move(h); }
  // tunnel-in: a new UDP flow. Before the peer has answered, FLOW_OPEN waits for that
  // answer: it goes out if the peer's flows hello came first, else the flow fails ("does
  // not carry UDP flows"); the flow is ready() once FLOW_OPEN is out. nullptr when the
  // session takes no new flows (GOAWAY either way, ended, full, or a peer known not to
  // carry flows).
  std::unique_ptr<flow> open_flow(std::string_view service, std::string_view origin);
  // The peer sent the flows hello: it understands FLOW_OPEN (known once ready()).
  bool peer_carries_flows() const { return peer_carries_flows_; }
  void on_accept_flow(flow_accept_handler h) { on_accept_flow_ = std::move(h); }
  // Called (on this thread) whenever usable()/ready() may have changed or a stream left.
  void on_change(std::function<void()> f) { on_change_ = std::move(f); }

  // No new streams from now on; the session ends once the last stream has.
  void goaway(reset_code code, std::string_view reason);

  bool ready() const { return ready_; }  // the peer has answered (our first ping)
  bool usable() const;                   // open() would succeed
  bool ended() const { return ended_; }
  bool retiring() const { return goaway_sent_ || goaway_received_; }
  bool retired_by_peer() const { return goaway_received_ && !goaway_sent_; }
  std::size_t stream_count() const { return streams_.size(); }
  std::size_t flow_count() const { return flows_.size(); }
  // Why the session failed ("" while it has not).
  const std::string& failure() const { return failure_; }
  const session_stats& stats() const { return stats_; }
  // Bytes the peer lets us send now on all streams together (its connection window).
  std::int64_t connection_credit() const { return send_credit_; }
  const tls::tls_stream& tls() const { return tls_; }

 private:
  friend class stream;
  friend class flow;
  // From streams (same thread).
  bool queue_data(stream& s, std::span<const std::byte> data);  // false: outbound full
  void queue_fin(stream& s);
  void queue_reset(std::uint32_t id, reset_code code, std::string_view reason);
  std::uint64_t queue_ping();  // a PING with a fresh nonzero opaque value, which it returns
  void consumed(stream& s, std::size_t n);
  void return_connection_credit(std::size_t n);  // taken (or dropped) bytes: WINDOW(0) in time
  void forget(stream& s);
  // The peer ended `s` (RESET, or a GOAWAY it sent before seeing the stream): unread bytes
  // are dropped and credited back, the stream fails with `ec` and leaves the session.
  void drop(stream& s, std::error_code ec);
  // `s` waits for room the whole session shares (connection credit, the outbound queue) to
  // send `wanted` bytes: wake_streams() wakes it, first in line if `first_in_line` (it was
  // woken and found the room taken). (A stream short of its own credit waits for its WINDOW.)
  void wait_for_room(stream& s, std::size_t wanted, bool first_in_line);
  // `s`'s write_all has resumed: the credit wake_streams counted on it is free again. True
  // if wake_streams had woken it.
  bool room_taken(stream& s);
  // From flows (same thread); session_flows.cpp.
  bool queue_datagram(flow& f, std::span<const std::byte> data);  // false: queue full, dropped
  void leave(flow& f, reset_code code, std::string_view reason);  // FLOW_CLOSE, forget

  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  asio::awaitable<void> keepalive();
  bool dispatch(const frame& f);  // false: protocol error (already recorded)
  // An OPEN / FLOW_OPEN may come only from the client, with an id above `last`; else a
  // protocol error is recorded and false returned.
  bool peer_may_open(std::uint32_t id, std::uint32_t last, const char* frame_name, const char* id_kind);
  void on_open(const frame& f);
  void on_data(const frame& f);
  void measure(stream& s, std::size_t n);  // DATA for a live stream: the window tuner's sample
  void report_window_growth();
  void on_window(const frame& f);
  void on_goaway(const frame& f);
  void on_flow_open(const frame& f);
  void on_datagram(const frame& f);
  void on_flow_close(const frame& f);
  void queue_flow_close(std::uint32_t id, reset_code code, std::string_view reason);
  void end_flows(std::error_code ec, std::string_view reason);
  void notify_flows();  // the peer has answered: flows may be waiting for that
  void send_pending_opens();  // the peer has answered: FLOW_OPEN for flows opened before
  bool accepting() const;  // new streams and flows may open
  void fail(std::string reason, std::error_code for_streams);
  void protocol_error(std::string reason);
  void wake_writer();
  void wake_streams();  // the streams waiting for room (wait_for_room), not every stream
  void maybe_finish();
  void mark_ready();  // the peer has answered; counted in ops::metrics
  void check_rotation();
  void changed();
  void end_streams(std::error_code ec);
  bool outbound_full() const;

  tls::tls_stream& tls_;
  session_settings settings_;
  std::unordered_map<std::uint32_t, stream*> streams_;
  // Streams waiting for room, by id (an id is never reused, so one that has gone is
  // skipped). Waking only these keeps a write's cost independent of the idle streams.
  std::deque<std::uint32_t> waiting_for_room_;
  std::int64_t room_promised_ = 0;  // connection credit woken streams have yet to use (wake_streams)
  std::unordered_map<std::uint32_t, flow*> flows_;
  std::uint32_t next_flow_id_ = 1;   // client: next flow id
  std::uint32_t last_peer_flow_ = 0; // server: highest flow id opened by the peer
  std::size_t datagram_bytes_queued_ = 0;  // DATAGRAM frames in out_, not yet handed to the writer
  bool peer_carries_flows_ = false;        // the peer's flows hello has arrived
  std::uint32_t next_id_ = 1;        // client: next stream id
  std::uint32_t last_peer_id_ = 0;   // server: highest stream id opened by the peer
  // Connection-level flow control.
  std::int64_t send_credit_ = initial_connection_window;
  std::int64_t recv_window_ = initial_connection_window;
  std::uint32_t consumed_unacked_ = 0;
  std::uint32_t window_ = initial_connection_window;  // granted so far (grows with the tuner)
  std::shared_ptr<window_budget> peer_budget_;  // tunnel-out: the peer's share (window_budget::for_peer)
  window_tuner tuner_;
  std::uint64_t probe_ping_ = 0;  // opaque value of the tuner's unanswered ping (0: none)
  std::int64_t growth_reported_ = 0;  // in ops::metrics' mux_window_growth_bytes
  bool growth_refused_ = false;       // counted once in mux_window_growth_refused
  // Outbound frames, packed into records by the writer; frame_ends_ marks frame boundaries.
  std::vector<std::byte> out_, sending_;
  std::vector<std::size_t> frame_ends_, sending_ends_;
  asio::steady_timer writer_wake_;
  asio::steady_timer reader_wake_;  // the reader waits here for our close_notify to go out
  std::chrono::steady_clock::time_point started_, last_rx_;
  std::uint64_t ping_outstanding_ = 0;  // opaque value of our unanswered ping (0: none)
  std::uint64_t drain_ping_ = 0;        // server: the ping after our GOAWAY, until answered
  std::chrono::steady_clock::time_point drain_started_;  // when that ping was queued
  std::uint64_t ping_counter_ = 0;
  bool ready_ = false, running_ = false, ended_ = false, closing_ = false;
  bool goaway_sent_ = false, goaway_received_ = false;
  std::uint32_t goaway_last_stream_ = 0;  // the peer's GOAWAY: the lowest last stream id it gave
  bool close_sent_ = false, peer_closed_ = false;  // close_notify each way
  std::chrono::steady_clock::time_point close_sent_at_;
  std::string failure_;              // the first failure, which ends the session
  std::error_code stream_error_;     // what streams fail with when the session ends
  session_stats stats_;
  accept_handler on_accept_;
  flow_accept_handler on_accept_flow_;
  std::function<void()> on_change_;
};

}  // namespace tunnel::mux
