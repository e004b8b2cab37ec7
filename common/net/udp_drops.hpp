#pragma once
// Counting dropped datagrams with a rate-limited log line: a flood of bad datagrams must
// cost a counter increment each, not a log line each.
#include <chrono>
#include <cstdint>

#include "ops/metrics.hpp"

namespace tunnel::net {

class drop_counter {
 public:
  using clock = std::chrono::steady_clock;

  // `reason` is the label under which drops show in tunnel_udp_datagrams_dropped_total.
  explicit drop_counter(ops::udp_drop reason = ops::udp_drop::other,
                        std::chrono::milliseconds log_interval = std::chrono::seconds(10))
      : reason_(reason), interval_(log_interval) {}

  // Counts one drop. True when a log line is due: the first drop, then at most one per
  // interval. since_last_log() then says how many drops the line covers.
  bool count(clock::time_point now = clock::now()) {
    ops::metrics::get().count(reason_);
    ++total_;
    ++since_log_;
    if (logged_once_ && now - last_log_ < interval_) return false;
    logged_once_ = true;
    last_log_ = now;
    return true;
  }
  // Drops since the previous log line, including the current one; resets on read.
  std::uint64_t since_last_log() {
    const auto n = since_log_;
    since_log_ = 0;
    return n;
  }
  std::uint64_t total() const { return total_; }

 private:
  ops::udp_drop reason_;
  std::chrono::milliseconds interval_;
  std::uint64_t total_ = 0;
  std::uint64_t since_log_ = 0;
  bool logged_once_ = false;
  clock::time_point last_log_{};
};

}  // namespace tunnel::net
