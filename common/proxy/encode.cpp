// Writing PROXY protocol headers (tunnel-out --proxy-protocol).
#include <algorithm>

#include "proxy/header.hpp"
#include "proxy/v2_layout.hpp"

namespace tunnel::proxy {
namespace {

void put(std::vector<std::byte>& out, std::string_view text) {
  for (char c : text) out.push_back(static_cast<std::byte>(c));
}

void put8(std::vector<std::byte>& out, unsigned v) { out.push_back(static_cast<std::byte>(v & 0xff)); }

void put16(std::vector<std::byte>& out, unsigned v) {
  put8(out, v >> 8);
  put8(out, v);
}

void put_ip(std::vector<std::byte>& out, const ip_endpoint& e) {
  const std::size_t n = e.v6 ? 16 : 4;
  for (std::size_t i = 0; i < n; ++i) put8(out, e.ip[i]);
}

// One family for both ends (see encode's contract).
addresses same_family(const addresses& a) {
  addresses out{unmapped(a.source), unmapped(a.destination)};
  if (out.source.v6 != out.destination.v6) out = {mapped_v6(out.source), mapped_v6(out.destination)};
  return out;
}

std::vector<std::byte> encode_v1(const std::optional<addresses>& given) {
  std::vector<std::byte> out;
  if (!given) {
    put(out, "PROXY UNKNOWN\r\n");
    return out;
  }
  const addresses a = same_family(*given);
  put(out, a.source.v6 ? "PROXY TCP6 " : "PROXY TCP4 ");
  put(out, a.source.ip_string() + " " + a.destination.ip_string() + " " + std::to_string(a.source.port) + " " +
               std::to_string(a.destination.port) + "\r\n");
  return out;
}

std::vector<std::byte> encode_v2(const std::optional<addresses>& given) {
  std::vector<std::byte> out(v2::signature.begin(), v2::signature.end());
  if (!given) {
    put8(out, v2::version_nibble | v2::command_local);
    put8(out, (v2::family_unspec << 4) | v2::transport_unspec);
    put16(out, 0);
    return out;
  }
  const addresses a = same_family(*given);
  put8(out, v2::version_nibble | v2::command_proxy);
  put8(out, ((a.source.v6 ? v2::family_inet6 : v2::family_inet) << 4) | v2::transport_stream);
  put16(out, a.source.v6 ? v2::inet6_block : v2::inet_block);
  put_ip(out, a.source);
  put_ip(out, a.destination);
  put16(out, a.source.port);
  put16(out, a.destination.port);
  return out;
}

}  // namespace

std::vector<std::byte> encode(version v, const std::optional<addresses>& a) {
  return v == version::v1 ? encode_v1(a) : encode_v2(a);
}

}  // namespace tunnel::proxy
