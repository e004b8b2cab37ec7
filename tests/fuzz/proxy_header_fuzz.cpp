// libFuzzer target for the PROXY protocol decoder: arbitrary first bytes of a connection,
// as tunnel-in --accept-proxy-protocol sees them. Checks the decoder's promises: bounded
// lengths, a decision once the bound is reached, and that a decoded header re-encodes to
// one that decodes to the same addresses.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "proxy/header.hpp"

using namespace tunnel::proxy;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  const auto d = decode(in);
  switch (d.status) {
    case decode_status::need_more:
      check(size < max_header_length);
      break;
    case decode_status::invalid:
      check(!d.reason.empty());
      break;
    case decode_status::complete: {
      check(d.length >= 15 && d.length <= size && d.length <= max_header_length);
      check(d.ver != version::v1 || d.length <= max_v1_length);
      // The header alone decodes the same: the decision never depends on the payload.
      const auto alone = decode(in.first(d.length));
      check(alone.status == decode_status::complete && alone.length == d.length && alone.addr == d.addr);
      const auto again = encode(d.ver, d.addr);
      const auto back = decode(again);
      check(back.status == decode_status::complete && back.length == again.size() && back.ver == d.ver);
      if (d.addr) check(back.addr && unmapped(back.addr->source) == unmapped(d.addr->source));
      else check(!back.addr);
      break;
    }
  }
  return 0;
}
