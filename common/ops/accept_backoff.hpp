#pragma once
// What an accept loop does when accept() fails (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
// pending connection stays in the kernel's backlog, so retrying at once fails again at
// once and spins a core. Instead: wait 100 ms between attempts, log the first failure of
// an episode (not every attempt) and the end of the episode, and count every failure in
// the metric tunnel_accept_failures_total. One object per accept loop, used on its thread.
//
// An episode ends with the first accept that succeeds a second or more after the last
// failure. Near the limit accepts alternate with failures (an accepted connection takes
// the last descriptor, fails to dial its next hop for want of a second one and gives it
// back); ending the episode at every success would log a pair of lines per connection.
#include <asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <system_error>

namespace tunnel::ops {

class accept_backoff {
 public:
  // `listen`: the listening address, for the log lines.
  explicit accept_backoff(std::string listen) : listen_(std::move(listen)) {}

  // After a failed accept: counts it, logs it if it starts an episode, then waits.
  asio::awaitable<void> failed(const std::error_code& ec);
  // After a successful accept: ends an episode, if one was under way and quiet for a
  // second, with one log line.
  void succeeded();

 private:
  std::string listen_;
  std::uint64_t failures_ = 0;  // in the current episode
  std::chrono::steady_clock::time_point since_, last_failure_;
};

}  // namespace tunnel::ops
