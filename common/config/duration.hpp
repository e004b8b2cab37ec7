#pragma once
// Durations as operators write them: "250ms", "10s", "5m", "1h", "0" (disabled where allowed).
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel::config {

using duration = std::chrono::milliseconds;

// Parses a duration: a non-negative integer followed by ms, s, m or h; a bare "0" is zero.
// Returns nullopt for anything else (empty, negative, fractions, unknown unit, overflow
// beyond 30 days).
std::optional<duration> parse_duration(std::string_view text);

// Renders a duration in the largest unit that divides it exactly ("1500ms", "10s", "5m").
std::string format_duration(duration d);

}  // namespace tunnel::config
