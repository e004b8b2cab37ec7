// libFuzzer target for the value parsers of flags and config keys: durations (every
// timeout, --keepalive, --reload-interval), sizes (--rotate-after) and --expiry-warning.
// Each either refuses the text or returns a value inside its documented bounds; a parsed
// duration prints back to text that parses to the same duration.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/duration.hpp"
#include "config/mux_flags.hpp"
#include "config/trust_flags.hpp"
#include "fuzz_check.hpp"

using namespace tunnel::config;
using namespace std::chrono_literals;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(fuzz::text(data, size));

  const auto d = parse_duration(text);
  if (d) {
    fuzz::check(*d >= 0ms && *d <= std::chrono::hours(30 * 24), "a duration lies in 0..30 days");
    fuzz::check(parse_duration(format_duration(*d)) == d, "a formatted duration parses to the same duration");
  }

  if (const auto n = parse_size(text)) fuzz::check(*n <= (std::uint64_t{1} << 50), "a size is at most 2^50");

  if (const auto w = parse_expiry_warning(text)) {
    fuzz::check(*w >= 0s && *w <= std::chrono::hours(365 * 24), "an expiry warning lies in 0..365 days");
    if (d) fuzz::check(*w == std::chrono::duration_cast<std::chrono::seconds>(*d), "a DUR means the same here");
  }
  return 0;
}
