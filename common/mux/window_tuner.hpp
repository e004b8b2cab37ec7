#pragma once
// Receive-window tuning for one mux session: how much each stream, and the connection, may
// have in flight towards this side.
//
// A stream's window must cover the path's bandwidth-delay product, or the sender idles
// waiting for credit: 256 KiB over a 50 ms round trip carries at most 5 MB/s, whatever the
// link. So the receiver measures: while DATA flows it sends a PING now and then and counts
// the DATA bytes each stream receives until the PONG is back. The busiest stream's count
// over the round trip is its rate; times the shortest round trip seen (the path without
// its queues) it is the stream's bandwidth-delay product. When that reaches two thirds of
// the stream window, the window was what held the sender back; if the rate is also the
// highest seen so far (a larger window bought more speed), the window grows to twice the
// product, up to a limit. A round trip stretched by queues (a busy receiver, a full
// outbound queue ahead of the PONG) lowers the estimate instead of raising it. Windows only
// grow, and only with DATA flowing: a path that needs less keeps 256 KiB.
//
// Growth costs memory only where data moves: a stream is granted the larger window as its
// reader takes bytes (session::consumed), so a reader that stops holds at most what its
// window was then. The connection window stays four times the stream window (at least its
// initial 4 MiB), which bounds the whole session's receive buffers. And all sessions of a
// process together grow by at most a fixed budget (window_budget), so many connections
// (or a peer that makes them grow, then stalls them) cannot multiply that bound. On
// tunnel-out, the sessions of one client (one key) together take at most half of that
// budget (window_budget::for_peer): one client cannot leave the others none.
//
// Pure: no clock of its own, no I/O (the session sends the pings); unit-tested.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "mux/frame.hpp"

namespace tunnel::mux {

// What all sessions' connection windows may have grown beyond their initial 4 MiB, together.
// A budget with a parent is a share of it: what is taken counts against both.
class window_budget {
 public:
  explicit window_budget(std::uint64_t limit, window_budget* parent = nullptr) : limit_(limit), parent_(parent) {}
  window_budget(const window_budget&) = delete;
  window_budget& operator=(const window_budget&) = delete;

  // Takes up to `wanted` bytes of the budget (and its parent's); returns how many it got
  // (any thread).
  std::uint64_t take(std::uint64_t wanted);
  void give_back(std::uint64_t n);
  std::uint64_t used() const { return used_.load(std::memory_order_relaxed); }

  static constexpr std::uint64_t process_limit = 256u << 20;
  static constexpr std::uint64_t peer_limit = process_limit / 2;
  static window_budget& process();  // the one every session uses
  // The share of process() that all sessions of the peer `key` use together: the same one
  // while any of them holds it (any thread).
  static std::shared_ptr<window_budget> for_peer(const std::string& key);

 private:
  std::uint64_t take_here(std::uint64_t wanted);

  const std::uint64_t limit_;
  window_budget* const parent_;
  std::atomic<std::uint64_t> used_{0};
};

class window_tuner {
 public:
  using clock = std::chrono::steady_clock;

  explicit window_tuner(window_budget& budget = window_budget::process()) : budget_(budget) {}
  ~window_tuner() { budget_.give_back(taken_); }
  window_tuner(const window_tuner&) = delete;
  window_tuner& operator=(const window_tuner&) = delete;

  static constexpr std::uint32_t max_stream_window = 8u << 20;  // above Linux's default TCP buffers
  // Pings at most this often (and one round trip apart at least): a few per second on a
  // busy connection, negligible next to its DATA.
  static constexpr clock::duration min_probe_interval = std::chrono::milliseconds(50);

  // DATA arrived for a live stream at `now`. True: send a probe PING now (then probe_sent).
  bool on_data(clock::time_point now);
  void probe_sent(clock::time_point now);
  // While probing: one stream has received `bytes` since the probe went out (the session
  // counts per stream, with probe_number() telling it when a new probe started).
  void stream_progress(std::uint64_t bytes);
  bool probing() const { return probing_; }
  std::uint32_t probe_number() const { return probes_; }
  // The probe's PONG arrived. True if the windows grew.
  bool probe_answered(clock::time_point now);

  std::uint32_t stream_window() const { return stream_window_; }
  std::uint32_t connection_window() const { return connection_window_; }
  // The last probe's round trip, and the shortest (zero before the first).
  clock::duration round_trip() const { return round_trip_; }
  clock::duration min_round_trip() const { return min_round_trip_; }
  // Growth the budget did not grant, in bytes of connection window (0: never short).
  std::uint64_t refused() const { return refused_; }
  std::uint64_t budget_taken() const { return taken_; }

 private:
  window_budget& budget_;
  std::uint64_t taken_ = 0;  // of the budget: connection_window_ - initial_connection_window
  std::uint32_t stream_window_ = initial_stream_window;
  std::uint32_t connection_window_ = initial_connection_window;
  bool probing_ = false;
  std::uint32_t probes_ = 0;
  std::uint64_t busiest_ = 0;  // the busiest stream's DATA bytes since the probe went out
  std::uint64_t refused_ = 0;
  clock::time_point probe_sent_at_{};
  clock::duration round_trip_{};
  clock::duration min_round_trip_ = clock::duration::max();
  double best_rate_ = 0;  // bytes per second, the highest sample so far
};

}  // namespace tunnel::mux
