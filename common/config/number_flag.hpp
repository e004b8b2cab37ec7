#pragma once
// The check every numeric flag passes before CLI11 converts it. CLI11 reads numbers with
// strtoll base 0, so "0x10" would be 16, "010" 8, and a value past the range of long long
// would arrive as its largest value, echoed back in the error as a number never typed.
// Only a plain decimal, optionally negative, of at most 18 digits and with no leading zero
// gets through; the
// flag's own range check then says what is allowed.
#include <CLI/CLI.hpp>
#include <string>

namespace tunnel::config {

inline const CLI::Validator& decimal_number() {
  static const CLI::Validator check(
      [](const std::string& text) -> std::string {
        const std::size_t digits_from = !text.empty() && text.front() == '-' ? 1 : 0;
        const std::size_t digits = text.size() - digits_from;
        bool plain = digits >= 1 && digits <= 18 && (digits == 1 || text[digits_from] != '0');
        for (std::size_t i = digits_from; plain && i < text.size(); ++i) plain = text[i] >= '0' && text[i] <= '9';
        return plain ? std::string() : text + ": not a decimal whole number";
      },
      "");
  return check;
}

}  // namespace tunnel::config
