#include "mux/window_tuner.hpp"

#include <algorithm>
#include <map>
#include <mutex>

namespace tunnel::mux {

bool window_tuner::on_data(clock::time_point now) {
  if (probing_ || stream_window_ >= max_stream_window) return false;  // nothing left to learn
  const auto spacing = std::max<clock::duration>(min_probe_interval, 2 * round_trip_);
  return probe_sent_at_ == clock::time_point{} || now - probe_sent_at_ >= spacing;
}

void window_tuner::probe_sent(clock::time_point now) {
  probing_ = true;
  ++probes_;
  busiest_ = 0;  // bytes arriving after the probe left: what one round trip carries
  probe_sent_at_ = now;
}

void window_tuner::stream_progress(std::uint64_t bytes) {
  if (probing_) busiest_ = std::max(busiest_, bytes);
}

bool window_tuner::probe_answered(clock::time_point now) {
  if (!probing_) return false;
  probing_ = false;
  round_trip_ = std::max<clock::duration>(now - probe_sent_at_, std::chrono::microseconds(1));
  min_round_trip_ = std::min(min_round_trip_, round_trip_);
  const double rate = static_cast<double>(busiest_) / std::chrono::duration<double>(round_trip_).count();
  const bool fastest = rate >= best_rate_;
  best_rate_ = std::max(best_rate_, rate);
  const double product = rate * std::chrono::duration<double>(min_round_trip_).count();
  // Window-bound: over the path's own round trip the stream would have most of a window
  // in flight.
  const bool window_bound = product * 3 >= static_cast<double>(stream_window_) * 2;
  if (!window_bound || !fastest || stream_window_ >= max_stream_window) return false;
  const std::uint64_t stream = std::clamp<std::uint64_t>(static_cast<std::uint64_t>(2 * product),
                                                         std::uint64_t{stream_window_} + 1, max_stream_window);
  // The connection window follows (four streams' worth), as far as the budget allows; the
  // stream window then stays within a quarter of it.
  const std::uint64_t connection = std::max<std::uint64_t>(initial_connection_window, 4 * stream);
  if (connection > connection_window_) {
    const std::uint64_t got = budget_.take(connection - connection_window_);
    refused_ += connection - connection_window_ - got;
    taken_ += got;
    connection_window_ += static_cast<std::uint32_t>(got);
  }
  const auto allowed = static_cast<std::uint32_t>(std::min<std::uint64_t>(stream, connection_window_ / 4));
  if (allowed <= stream_window_) return false;
  stream_window_ = allowed;
  return true;
}

std::uint64_t window_budget::take_here(std::uint64_t wanted) {
  std::uint64_t used = used_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t got = std::min(wanted, limit_ > used ? limit_ - used : 0);
    if (got == 0 || used_.compare_exchange_weak(used, used + got, std::memory_order_relaxed)) return got;
  }
}

std::uint64_t window_budget::take(std::uint64_t wanted) {
  const std::uint64_t got = take_here(wanted);
  if (!parent_ || got == 0) return got;
  const std::uint64_t granted = parent_->take(got);
  used_.fetch_sub(got - granted, std::memory_order_relaxed);  // what the parent had not
  return granted;
}

void window_budget::give_back(std::uint64_t n) {
  used_.fetch_sub(n, std::memory_order_relaxed);
  if (parent_) parent_->give_back(n);
}

window_budget& window_budget::process() {
  static window_budget budget(process_limit);
  return budget;
}

std::shared_ptr<window_budget> window_budget::for_peer(const std::string& key) {
  static std::mutex lock;
  static std::map<std::string, std::weak_ptr<window_budget>> shares;
  static std::size_t live_after_sweep = 0;
  const std::lock_guard held(lock);
  // Peers with no session left go now and then, not on every call: a sweep per doubling.
  if (shares.size() > 2 * live_after_sweep + 16) {
    std::erase_if(shares, [](const auto& e) { return e.second.expired(); });
    live_after_sweep = shares.size();
  }
  auto& slot = shares[key];
  auto share = slot.lock();
  if (!share) {
    share = std::make_shared<window_budget>(peer_limit, &process());
    slot = share;
  }
  return share;
}

}  // namespace tunnel::mux
