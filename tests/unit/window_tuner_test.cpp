#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>

#include "mux/window_tuner.hpp"

using namespace std::chrono_literals;
using tunnel::mux::initial_connection_window;
using tunnel::mux::initial_stream_window;
using tunnel::mux::window_budget;
using tunnel::mux::window_tuner;

namespace {

using clock_type = window_tuner::clock;

// One probe: DATA starts it at `t`, the busiest stream receives `bytes` during the round
// trip `rtt`, the PONG comes back. Returns whether the window grew; `t` moves past the probe.
bool probe(window_tuner& w, clock_type::time_point& t, std::uint64_t bytes, clock_type::duration rtt) {
  REQUIRE(w.on_data(t));
  w.probe_sent(t);
  w.stream_progress(bytes / 2);
  CHECK_FALSE(w.on_data(t + rtt / 2));  // one probe at a time
  w.stream_progress(bytes);
  const bool grew = w.probe_answered(t + rtt);
  t += rtt + 1s;  // well past the probe spacing
  return grew;
}

}  // namespace

TEST_CASE("window tuner: a path that needs less than the initial window keeps it") {
  window_tuner w;
  auto t = clock_type::time_point{} + 1h;
  // 100 KiB per 1 ms round trip: 100 MB/s, but far from 256 KiB in flight.
  for (int i = 0; i < 20; ++i) CHECK_FALSE(probe(w, t, 100 * 1024, 1ms));
  CHECK(w.stream_window() == initial_stream_window);
  CHECK(w.connection_window() == initial_connection_window);
  CHECK(w.round_trip() == 1ms);
}

TEST_CASE("window tuner: a window-bound sender doubles the window, up to the limit") {
  window_budget budget(window_budget::process_limit);
  window_tuner w(budget);
  auto t = clock_type::time_point{} + 1h;
  // A 50 ms path where the sender sends its whole window every round trip: the window
  // doubles with each probe while the rate keeps rising, and stops at the limit.
  std::uint32_t previous = w.stream_window();
  int probes = 0;
  while (w.stream_window() < window_tuner::max_stream_window) {
    REQUIRE(++probes < 10);
    CHECK(probe(w, t, w.stream_window(), 50ms));
    CHECK(w.stream_window() == std::min(2 * previous, window_tuner::max_stream_window));
    previous = w.stream_window();
  }
  CHECK(probes == 5);  // 256 KiB -> 8 MiB
  CHECK(w.connection_window() == 4 * window_tuner::max_stream_window);
  CHECK(budget.used() == 4 * window_tuner::max_stream_window - initial_connection_window);
  // At the limit there is nothing more to learn: no more probes.
  CHECK_FALSE(w.on_data(t));
}

TEST_CASE("window tuner: all sessions together grow within the budget, and give it back") {
  // Room for one more connection window's worth (4 MiB) beyond the initial ones.
  window_budget budget(initial_connection_window);
  auto t = clock_type::time_point{} + 1h;
  {
    window_tuner first(budget), second(budget);
    while (probe(first, t, first.stream_window(), 50ms)) {
    }
    // The first took the whole budget: 8 MiB of connection window, so 2 MiB per stream.
    CHECK(first.connection_window() == 2 * initial_connection_window);
    CHECK(first.stream_window() == 2 * 1024 * 1024);
    CHECK(budget.used() == initial_connection_window);
    // The second grows only as far as its initial connection window allows (1 MiB a stream).
    while (probe(second, t, second.stream_window(), 50ms)) {
    }
    CHECK(second.connection_window() == initial_connection_window);
    CHECK(second.stream_window() == initial_connection_window / 4);
    CHECK(second.refused() > 0);
    CHECK(first.refused() > 0);  // it asked for 32 MiB
  }
  CHECK(budget.used() == 0);  // sessions that end give theirs back
}

TEST_CASE("window tuner: more window that bought no speed stops the growth") {
  window_tuner w;
  auto t = clock_type::time_point{} + 1h;
  CHECK(probe(w, t, initial_stream_window, 10ms));  // 26 MB/s, window-bound: grows to 512 KiB
  const auto grown = w.stream_window();
  // The next round trip carried the whole window again, but took four times as long (a
  // queue filled somewhere): a lower rate than before, so no growth.
  CHECK_FALSE(probe(w, t, grown, 40ms));
  CHECK(w.stream_window() == grown);
}

TEST_CASE("window tuner: a round trip stretched by queues is not taken for a long path") {
  window_tuner w;
  auto t = clock_type::time_point{} + 1h;
  CHECK_FALSE(probe(w, t, 1024, 200us));  // the path itself: 0.2 ms (5 MB/s)
  // Later a whole window arrives per round trip (a little faster, 5.2 MB/s), but the round
  // trip is 50 ms because the PONG waited in queues: over the path's 0.2 ms that rate is
  // 1 KiB in flight. No growth.
  for (int i = 0; i < 5; ++i) CHECK_FALSE(probe(w, t, w.stream_window(), 50ms));
  CHECK(w.stream_window() == initial_stream_window);
  CHECK(w.min_round_trip() == 200us);
}

TEST_CASE("window tuner: many streams' bytes together do not make one stream window-bound") {
  window_tuner w;
  auto t = clock_type::time_point{} + 1h;
  // Ten streams receive 100 KiB each per 50 ms round trip: a megabyte, but no stream came
  // near its 256 KiB window.
  for (int i = 0; i < 5; ++i) {
    REQUIRE(w.on_data(t));
    w.probe_sent(t);
    for (int stream = 0; stream < 10; ++stream) w.stream_progress(100 * 1024);
    CHECK_FALSE(w.probe_answered(t + 50ms));
    t += 1s;
  }
  CHECK(w.stream_window() == initial_stream_window);
}

TEST_CASE("window tuner: probes are spaced, and only DATA starts one") {
  window_tuner w;
  auto t = clock_type::time_point{} + 1h;
  REQUIRE(w.on_data(t));
  w.probe_sent(t);
  w.stream_progress(1);
  CHECK_FALSE(w.probe_answered(t + 1ms));  // 1 byte in a round trip: no growth
  // Right after an answered probe: not yet (50 ms at least, two round trips on slow paths).
  CHECK_FALSE(w.on_data(t + 10ms));
  CHECK(w.on_data(t + window_tuner::min_probe_interval));
  // A PONG nobody waited for changes nothing.
  window_tuner idle;
  CHECK_FALSE(idle.probe_answered(t));
  CHECK(idle.stream_window() == initial_stream_window);
}

TEST_CASE("window tuner: one peer's sessions grow within its share, and another peer's still grow") {
  window_budget process(2 * initial_connection_window);
  window_budget peer_a(initial_connection_window, &process), peer_b(initial_connection_window, &process);
  auto t = clock_type::time_point{} + 1h;
  {
    window_tuner a1(peer_a), a2(peer_a), b(peer_b);
    while (probe(a1, t, a1.stream_window(), 50ms)) {
    }
    while (probe(a2, t, a2.stream_window(), 50ms)) {
    }
    // Peer a's two sessions together took its share (4 MiB), not the whole budget (8 MiB).
    CHECK(peer_a.used() == initial_connection_window);
    CHECK(process.used() == initial_connection_window);
    CHECK(a2.refused() > 0);
    // Peer b still grows, into what peer a could not take.
    while (probe(b, t, b.stream_window(), 50ms)) {
    }
    CHECK(b.connection_window() == 2 * initial_connection_window);
    CHECK(process.used() == 2 * initial_connection_window);
  }
  CHECK(peer_a.used() == 0);
  CHECK(peer_b.used() == 0);
  CHECK(process.used() == 0);
}

TEST_CASE("window budget: a share takes no more than its parent has left") {
  window_budget parent(1000);
  window_budget share(800, &parent);
  CHECK(parent.take(500) == 500);
  CHECK(share.take(800) == 500);  // the parent had 500 left
  CHECK(share.used() == 500);
  CHECK(parent.used() == 1000);
  share.give_back(500);
  CHECK(parent.used() == 500);
  CHECK(share.used() == 0);
}

TEST_CASE("window budget: the sessions of one peer share one budget while any holds it") {
  auto first = window_budget::for_peer("key-a");
  auto second = window_budget::for_peer("key-a");
  auto other = window_budget::for_peer("key-b");
  CHECK(first == second);
  CHECK(first != other);
  const auto got = first->take(window_budget::peer_limit + 1);
  CHECK(got == window_budget::peer_limit);
  first->give_back(got);
}
