#pragma once
// How many warning and error lines of one kind the log takes. A hostile peer can cause one
// per attempt (a failed handshake, a refused flow): a flood of them would bury everything
// else and, with a slow reader on stderr, stall the workers that write them. Each message
// text gets a burst of lines, then a steady number a second; the lines over that are left
// out and counted, and the next line printed for that message says how many
// (`suppressed=N`).
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tunnel::ops {

class log_budget {
 public:
  using clock = std::chrono::steady_clock;
  struct verdict {
    bool print;
    std::uint64_t suppressed_before;  // lines of this kind left out since the last printed one
  };

  log_budget(double burst, double per_second) : burst_(burst), per_second_(per_second) {}
  verdict admit(std::string_view message, clock::time_point now);

  // Message texts are fixed in code; past this many, the rest share one budget.
  static constexpr std::size_t max_kinds = 256;

 private:
  struct bucket {
    double tokens;
    clock::time_point last;
    std::uint64_t suppressed = 0;
  };
  const double burst_;
  const double per_second_;
  // Looked up by string_view: a warning over the budget (the flood case) allocates nothing.
  struct text_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::mutex mutex_;
  std::unordered_map<std::string, bucket, text_hash, std::equal_to<>> buckets_;
};

// The process's budget for warnings and errors: 20 lines of a kind at once, then 5 a second.
log_budget& warning_budget();

}  // namespace tunnel::ops
