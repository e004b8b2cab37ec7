#pragma once
// Legacy datagrams a UDP flow holds while its handshake runs. Bounded three ways: a count
// and a byte total per flow, and a byte total shared by all flows of a relay. A burst from
// many source addresses (spoofed or not: nothing has to come back) must not buy megabytes
// per flow before a single handshake has completed; a client that sends more than this
// before its flow is up loses the rest, counted, as on a congested network.
#include <cstddef>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace tunnel::net {

class held_datagrams {
 public:
  static constexpr std::size_t max_count = 32;
  static constexpr std::size_t max_bytes = 64 * 1024;          // per flow
  static constexpr std::size_t max_relay_bytes = 4u << 20;     // all flows of one relay

  // `relay_bytes`: the relay's running total, shared: a flow's coroutine may outlive the
  // relay object at shutdown.
  explicit held_datagrams(std::shared_ptr<std::size_t> relay_bytes) : relay_(std::move(relay_bytes)) {}
  ~held_datagrams() { clear(); }
  held_datagrams(const held_datagrams&) = delete;
  held_datagrams& operator=(const held_datagrams&) = delete;

  // False (and nothing kept) when `d` would pass a bound.
  bool push(std::span<const unsigned char> d) {
    if (queue_.size() >= max_count || bytes_ + d.size() > max_bytes || *relay_ + d.size() > max_relay_bytes)
      return false;
    queue_.emplace_back(d.begin(), d.end());
    bytes_ += d.size();
    *relay_ += d.size();
    return true;
  }
  bool empty() const { return queue_.empty(); }
  std::size_t size() const { return queue_.size(); }
  std::vector<unsigned char> pop() {
    std::vector<unsigned char> d = std::move(queue_.front());
    queue_.pop_front();
    bytes_ -= d.size();
    *relay_ -= d.size();
    return d;
  }
  void clear() {
    *relay_ -= bytes_;
    bytes_ = 0;
    queue_.clear();
  }

 private:
  std::deque<std::vector<unsigned char>> queue_;
  std::size_t bytes_ = 0;
  std::shared_ptr<std::size_t> relay_;
};

}  // namespace tunnel::net
