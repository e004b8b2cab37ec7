#pragma once
// A worker's event loop: io_context::run(), or, with busy polling, a loop that keeps looking
// for work a while before it sleeps.
//
// A worker that sleeps in epoll_wait pays a wake-up for the next event: the scheduler, and
// on a virtual machine often the hypervisor waking an idle virtual CPU, tens of
// microseconds per hop. With `busy_poll` > 0 a worker that runs out of ready work keeps
// polling (epoll_wait with no timeout) for up to `busy_poll` since it last had work, giving
// the core to anything else runnable between looks (sched_yield), and only then sleeps.
// An event within that window is picked up at once. It costs CPU time while it looks, never
// when the process is idle, and helps latency only where a core is free to look with.
#include <asio/io_context.hpp>
#include <chrono>

namespace tunnel::ops {

// Runs `io` until it is stopped or out of work, as io_context::run() does.
void run_event_loop(asio::io_context& io, std::chrono::microseconds busy_poll);

}  // namespace tunnel::ops
