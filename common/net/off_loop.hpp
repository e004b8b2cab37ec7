#pragma once
// Blocking work kept off an event loop: a name lookup (getaddrinfo), or reading files that
// may sit on a hung network mount. The work runs on a thread of its own; the event loop
// that waits for it keeps serving, and is woken once the work is done.
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <mutex>

namespace tunnel::net {

// Whether an event loop still takes wake-ups from other threads: closed (under m) when its
// io_context starts being destroyed, before its queues are torn down unguarded. A thread
// posts to it only under m while open.
struct wakeup_gate {
  std::mutex m;
  bool closed = false;
};

// The gate of the event loop `ex` runs on (one per io_context, made on first use).
std::shared_ptr<wakeup_gate> gate_of(const asio::any_io_executor& ex);

// From another thread: cancels `timer` (what a coroutine on `ex`'s loop waits on) by a post
// to that loop, unless its gate has closed or the timer is gone. Nothing when out of memory.
void wake_waiter(wakeup_gate& gate, const asio::any_io_executor& ex, const std::weak_ptr<asio::steady_timer>& timer) noexcept;

// Starts `body` on a detached thread that takes no signals, so that signals sent to the
// process (SIGTERM, SIGHUP) always go to an event loop that can handle them at once.
// Throws what std::thread throws (std::system_error, std::bad_alloc).
void start_detached(std::function<void()> body);

// Runs `work` on a new thread and returns once it has finished; the caller's event loop
// serves others meanwhile. The caller's io_context must be run by a single thread. `work`
// must own (or share) everything it touches: if the caller goes (its io_context destroyed
// at exit), the thread finishes alone and wakes no one. False, at once and without running
// `work`, when no thread could be made. An exception from `work` is swallowed: report
// failures through what it fills in. The wait cannot be given up: it lasts as long as
// `work` does, for ever if that hangs, while the loop goes on serving.
asio::awaitable<bool> run_off_loop(std::function<void()> work);

}  // namespace tunnel::net
