// libFuzzer target for the address parser (--listen, --connect, --target and their config
// keys): any text either parses to an address that prints back to text parsing to the same
// address, or is refused with a reason.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "net/address.hpp"

using tunnel::net::address;
using tunnel::net::parse_address;

namespace {

bool same(const address& a, const address& b) {
  return a.type == b.type && a.host == b.host && a.port == b.port && a.path == b.path;
}

void check_one(std::string_view text, bool allow_port_zero) {
  std::string why;
  const auto a = parse_address(text, why, allow_port_zero);
  if (!a) {
    fuzz::check(!why.empty(), "a refused address comes with a reason");
    return;
  }
  if (a->is_unix()) {
    fuzz::check(a->path.starts_with('/') && a->path.size() <= 107, "a unix path is absolute and fits sun_path");
  } else {
    fuzz::check(!a->host.empty(), "an inet address has a host");
    fuzz::check(a->port != 0 || allow_port_zero, "port 0 only where allowed");
  }
  std::string why_again;
  const auto again = parse_address(a->to_string(), why_again, allow_port_zero);
  fuzz::check(again && same(*a, *again), "to_string() gives text that parses to the same address");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto text = fuzz::text(data, size);
  check_one(text, false);
  check_one(text, true);
  return 0;
}
