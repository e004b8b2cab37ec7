#include "config/duration.hpp"

#include <charconv>

namespace tunnel::config {

std::optional<duration> parse_duration(std::string_view text) {
  if (text == "0") return duration{0};
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 9) return std::nullopt;
  unsigned long long value = 0;
  std::from_chars(text.data(), text.data() + digits, value);
  const std::string_view unit = text.substr(digits);
  unsigned long long ms_per_unit = 0;
  if (unit == "ms") ms_per_unit = 1;
  else if (unit == "s") ms_per_unit = 1000;
  else if (unit == "m") ms_per_unit = 60'000;
  else if (unit == "h") ms_per_unit = 3'600'000;
  else return std::nullopt;
  const unsigned long long ms = value * ms_per_unit;  // value < 1e9, unit <= 3.6e6: no overflow
  constexpr unsigned long long max_ms = 30ULL * 24 * 3'600'000;
  if (ms > max_ms) return std::nullopt;
  return duration{static_cast<long long>(ms)};
}

std::string format_duration(duration d) {
  const long long ms = d.count();
  if (ms == 0) return "0";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace tunnel::config
