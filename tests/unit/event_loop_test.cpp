#include <doctest/doctest.h>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <stdexcept>
#include <thread>

#include "ops/event_loop.hpp"
#include "ops/runtime.hpp"

using namespace std::chrono_literals;

namespace {
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Runs handlers posted from another thread and a timer, then returns when out of work.
void runs_work_and_returns(std::chrono::microseconds busy_poll) {
  asio::io_context io(1);
  std::atomic<int> posted_ran{0};
  bool timer_fired = false;
  asio::steady_timer timer(io, 30ms);
  timer.async_wait([&](std::error_code ec) { timer_fired = !ec; });
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i) {
      asio::post(io, [&] { posted_ran.fetch_add(1); });
      std::this_thread::sleep_for(100us);
    }
  });
  // Work from the other thread may arrive after the timer: hold the loop until all of it has.
  auto guard = asio::make_work_guard(io);
  std::thread release([&] {
    poster.join();
    asio::post(io, [&] { guard.reset(); });
  });
  tunnel::ops::run_event_loop(io, busy_poll);
  release.join();
  CHECK(posted_ran.load() == 100);
  CHECK(timer_fired);
  CHECK(io.stopped());
}
}  // namespace

TEST_CASE("event loop: runs posted handlers and timers, and returns when out of work") {
  SUBCASE("sleeping at once") { runs_work_and_returns(0us); }
  SUBCASE("busy polling") { runs_work_and_returns(200us); }
}

TEST_CASE("event loop: busy polling ends once the loop has had no work for the window") {
  // A timer 300 ms away and nothing else: the loop looks for work for 100 us, then sleeps.
  // Polling the whole time would cost about 300 ms of CPU.
  asio::io_context io(1);
  asio::steady_timer timer(io, 300ms);
  bool fired = false;
  timer.async_wait([&](std::error_code ec) { fired = !ec; });
  const double cpu0 = thread_cpu_seconds();
  tunnel::ops::run_event_loop(io, 100us);
  const double cpu = thread_cpu_seconds() - cpu0;
  CHECK(fired);
  CHECK(cpu < 0.1);
}

TEST_CASE("event loop: stop() ends a busy-polling loop") {
  asio::io_context io(1);
  auto guard = asio::make_work_guard(io);
  std::thread stopper([&] {
    std::this_thread::sleep_for(20ms);
    io.stop();
  });
  tunnel::ops::run_event_loop(io, 5000us);  // stopped while polling or while asleep
  stopper.join();
  CHECK(io.stopped());
}

TEST_CASE("runtime: a periodic task that throws is logged and runs again; SIGTERM ends the run") {
  tunnel::ops::runtime rt(1, 200ms);
  int runs = 0;
  rt.every(5ms, [&] {
    ++runs;
    if (runs == 1) throw std::runtime_error("a chore failed");
    if (runs == 3) std::raise(SIGTERM);  // the runtime's own handler: drain, then stop
  });
  CHECK(rt.run() == 0);
  CHECK(runs >= 3);
}
