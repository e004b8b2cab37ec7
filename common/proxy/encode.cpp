// Writing PROXY protocol headers (tunnel-out --proxy-protocol).
#include <algorithm>

#include "codec/bytes.hpp"
#include "proxy/header.hpp"
#include "proxy/v2_layout.hpp"

namespace tunnel::proxy {
namespace {

void put_ip(codec::writer& w, const ip_endpoint& e) {
  w.raw(std::as_bytes(std::span(e.ip).first(e.v6 ? 16 : 4)));
}

// One family for both ends (see encode's contract).
addresses same_family(const addresses& a) {
  addresses out{unmapped(a.source), unmapped(a.destination)};
  if (out.source.v6 != out.destination.v6) out = {mapped_v6(out.source), mapped_v6(out.destination)};
  return out;
}

std::vector<std::byte> encode_v1(const std::optional<addresses>& given) {
  std::vector<std::byte> out;
  out.reserve(max_v1_length);  // also spares GCC 12 at -O3 a false stringop-overflow warning
  codec::writer w(out);
  if (!given) {
    w.raw("PROXY UNKNOWN\r\n");
    return out;
  }
  const addresses a = same_family(*given);
  w.raw(a.source.v6 ? "PROXY TCP6 " : "PROXY TCP4 ");
  w.raw(a.source.ip_string() + " " + a.destination.ip_string() + " " + std::to_string(a.source.port) + " " +
        std::to_string(a.destination.port) + "\r\n");
  return out;
}

std::vector<std::byte> encode_v2(const std::optional<addresses>& given) {
  std::vector<std::byte> out(v2::signature.begin(), v2::signature.end());
  codec::writer w(out);
  if (!given) {
    w.u8(v2::version_nibble | v2::command_local);
    w.u8((v2::family_unspec << 4) | v2::transport_unspec);
    w.u16(0);
    return out;
  }
  const addresses a = same_family(*given);
  w.u8(v2::version_nibble | v2::command_proxy);
  w.u8(((a.source.v6 ? v2::family_inet6 : v2::family_inet) << 4) | v2::transport_stream);
  w.u16(a.source.v6 ? v2::inet6_block : v2::inet_block);
  put_ip(w, a.source);
  put_ip(w, a.destination);
  w.u16(a.source.port);
  w.u16(a.destination.port);
  return out;
}

}  // namespace

std::vector<std::byte> encode(version v, const std::optional<addresses>& a) {
  return v == version::v1 ? encode_v1(a) : encode_v2(a);
}

}  // namespace tunnel::proxy
