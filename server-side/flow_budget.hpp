#pragma once
// The --max-flows bound of one UDP service on tunnel-out, shared by its DTLS flows (on the
// main thread) and its flows over TLS (on the mux connections' worker threads), so the
// bound holds for the service whatever carries its flows.
#include <atomic>
#include <cstddef>

namespace tunnel::server {

class flow_budget {
 public:
  explicit flow_budget(std::size_t max_flows) : max_(max_flows) {}

  // Takes one flow's place: false when all are taken. Any thread.
  bool take() {
    std::size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (used >= max_) return false;
    } while (!used_.compare_exchange_weak(used, used + 1, std::memory_order_relaxed));
    return true;
  }
  // Gives one place back (exactly once per successful take). Any thread.
  void give_back() { used_.fetch_sub(1, std::memory_order_relaxed); }

  // Whether a take() now would fail (any thread; a hint: another may take or give back).
  bool full() const { return used_.load(std::memory_order_relaxed) >= max_; }
  std::size_t max() const { return max_; }

 private:
  std::atomic<std::size_t> used_{0};
  const std::size_t max_;
};

}  // namespace tunnel::server
