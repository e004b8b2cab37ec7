// libFuzzer target for the PSK file parser (--psk-file): any text either yields an entry
// within the documented bounds or is refused with a reason that never repeats the key.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "tls/psk_file.hpp"

using namespace tunnel::tls;

namespace {

bool all_hex(std::string_view s) {
  return s.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto text = fuzz::text(data, size);
  std::string why;
  const auto entry = parse_psk(text, why);
  if (entry) {
    fuzz::check(!entry->identity.empty() && entry->identity.size() <= psk_identity_max, "identity length");
    for (char c : entry->identity) fuzz::check(c > 0x20 && c < 0x7f, "identity is printable ASCII");
    fuzz::check(entry->key.size() >= psk_min_bytes && entry->key.size() <= psk_max_bytes, "key length");
    return 0;
  }
  fuzz::check(!why.empty(), "a refused file comes with a reason");
  // Key-like text (a run of hex digits as long as the shortest key) must not reach the log.
  if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    const auto key = text.substr(colon + 1, 2 * psk_min_bytes);
    if (key.size() == 2 * psk_min_bytes && all_hex(key))
      fuzz::check(why.find(key) == std::string::npos, "the reason never holds key material");
  }
  return 0;
}
