#pragma once
// Counting dropped datagrams with a rate-limited log line: a flood of bad datagrams must
// cost a counter increment each, not a log line each.
#include <chrono>
#include <cstdint>

#include "ops/metrics.hpp"

namespace tunnel::net {

// Counts events and says when a log line about them is due: the first, then at most one
// per interval.
class log_interval {
 public:
  using clock = std::chrono::steady_clock;

  explicit log_interval(std::chrono::milliseconds interval = std::chrono::seconds(10)) : interval_(interval) {}

  // Counts one event. True when a log line is due; since_last_log() then says how many
  // events the line covers.
  bool count(clock::time_point now = clock::now()) {
    ++total_;
    ++since_log_;
    if (logged_once_ && now - last_log_ < interval_) return false;
    logged_once_ = true;
    last_log_ = now;
    return true;
  }
  // Events since the previous log line, including the current one; resets on read.
  std::uint64_t since_last_log() {
    const auto n = since_log_;
    since_log_ = 0;
    return n;
  }
  std::uint64_t total() const { return total_; }

 private:
  std::chrono::milliseconds interval_;
  std::uint64_t total_ = 0;
  std::uint64_t since_log_ = 0;
  bool logged_once_ = false;
  clock::time_point last_log_{};
};

// Dropped datagrams: each counted in tunnel_udp_datagrams_dropped_total under its reason,
// with a rate-limited log line.
class drop_counter : public log_interval {
 public:
  explicit drop_counter(ops::udp_drop reason = ops::udp_drop::other,
                        std::chrono::milliseconds log_interval = std::chrono::seconds(10))
      : net::log_interval(log_interval), reason_(reason) {}

  bool count(clock::time_point now = clock::now()) {
    ops::metrics::get().count(reason_);
    return log_interval::count(now);
  }

 private:
  ops::udp_drop reason_;
};

}  // namespace tunnel::net
