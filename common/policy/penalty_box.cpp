#include "policy/penalty_box.hpp"

#include <algorithm>

namespace tunnel::policy {

std::optional<penalty_box::clock::duration> penalty_box::failed(const source& from, clock::duration cpu,
                                                                clock::time_point now) {
  if (cpu < costly) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = entries_.find(from);
  if (it == entries_.end()) {
    if (entries_.size() >= capacity) {
      // Make room: an entry whose penalty is over, else the one offended longest ago.
      auto victim = std::find_if(entries_.begin(), entries_.end(), [&](const auto& e) { return e.second.until <= now; });
      if (victim == entries_.end())
        victim = std::min_element(entries_.begin(), entries_.end(),
                                  [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
      entries_.erase(victim);
    }
    it = entries_.emplace(from, entry{}).first;
  }
  entry& e = it->second;
  // Doubling while the offences continue; a source quiet for a full longest penalty
  // starts again from the first.
  const bool again = e.penalty.count() > 0 && now - e.until < longest_penalty;
  e.penalty = again ? std::min<clock::duration>(2 * e.penalty, longest_penalty) : first_penalty;
  e.until = now + e.penalty;
  e.last = now;
  return e.penalty;
}

bool penalty_box::penalised(const source& from, clock::time_point now) const {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(from);
  return it != entries_.end() && now < it->second.until;
}

std::size_t penalty_box::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

penalty_box& penalty_box::process() {
  static penalty_box box;
  return box;
}

}  // namespace tunnel::policy
