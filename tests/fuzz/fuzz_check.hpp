#pragma once
// What every fuzz target shares: the input as bytes or text, and a check that turns a
// broken promise into a crash libFuzzer (or the corpus replay) reports with the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

namespace fuzz {

inline void check(bool ok, const char* promise) {
  if (ok) return;
  std::fprintf(stderr, "fuzz check failed: %s\n", promise);
  std::abort();
}

inline std::span<const std::byte> bytes(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}

inline std::string_view text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace fuzz
