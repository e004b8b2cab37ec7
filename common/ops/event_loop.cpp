#include "ops/event_loop.hpp"

#include <sched.h>

namespace tunnel::ops {

void run_event_loop(asio::io_context& io, std::chrono::microseconds busy_poll) {
  if (busy_poll.count() <= 0) {
    io.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  while (!io.stopped()) {
    if (io.poll() > 0) {  // ready handlers, or events epoll has now
      last_work = clock::now();
      continue;
    }
    if (io.stopped()) break;  // out of work: poll() stopped it, as run() would
    if (clock::now() - last_work < busy_poll) {
      sched_yield();  // anything else runnable on this core goes first
      continue;
    }
    if (io.run_one() > 0) last_work = clock::now();  // sleeps until an event or a timer
  }
}

}  // namespace tunnel::ops
