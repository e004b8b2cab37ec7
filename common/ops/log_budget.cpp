#include "ops/log_budget.hpp"

#include <algorithm>
#include <utility>

namespace tunnel::ops {

log_budget::verdict log_budget::admit(std::string_view message, clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = buckets_.find(message);
  if (it == buckets_.end()) {
    const std::string_view key = buckets_.size() < max_kinds ? message : std::string_view();
    it = buckets_.try_emplace(std::string(key), bucket{burst_, now}).first;
  }
  bucket& b = it->second;
  const std::chrono::duration<double> gap = now - b.last;
  b.tokens = std::min(burst_, b.tokens + std::max(gap.count(), 0.0) * per_second_);
  b.last = std::max(b.last, now);
  if (b.tokens < 1.0) {
    ++b.suppressed;
    return {false, 0};
  }
  b.tokens -= 1.0;
  return {true, std::exchange(b.suppressed, 0)};
}

log_budget& warning_budget() {
  static log_budget budget(20, 5);
  return budget;
}

}  // namespace tunnel::ops
