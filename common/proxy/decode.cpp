// Reading PROXY protocol headers (tunnel-in --accept-proxy-protocol). The bytes come from
// whoever connects: every length is checked against what has arrived before it is used.
#include <algorithm>
#include <string_view>

#include "codec/bytes.hpp"
#include "proxy/header.hpp"
#include "proxy/v2_layout.hpp"

namespace tunnel::proxy {
namespace {

constexpr std::string_view v1_signature = "PROXY ";

decoded invalid(version v, std::string reason) {
  decoded d;
  d.status = decode_status::invalid;
  d.ver = v;
  d.reason = std::move(reason);
  return d;
}

decoded need_more(version v) {
  decoded d;
  d.ver = v;
  return d;
}

// True when `bytes` is a prefix of `sig` or starts with all of it.
template <class Sig>
bool matches_so_far(std::span<const std::byte> bytes, const Sig& sig) {
  const std::size_t n = std::min(bytes.size(), std::size(sig));
  for (std::size_t i = 0; i < n; ++i)
    if (bytes[i] != static_cast<std::byte>(sig[i])) return false;
  return true;
}

// "TCP4 <src> <dst> <sport> <dport>": exactly single spaces, the family's literals.
std::optional<addresses> parse_v1_addresses(std::string_view fields, bool v6) {
  std::string_view parts[5];
  std::size_t count = 0;
  while (count < 5) {
    const auto space = fields.find(' ');
    parts[count++] = fields.substr(0, space);
    if (space == std::string_view::npos) break;
    fields.remove_prefix(space + 1);
    if (count == 5) return std::nullopt;  // more fields than the format has
  }
  if (count != 5) return std::nullopt;
  auto src = parse_ip(parts[1], v6);
  auto dst = parse_ip(parts[2], v6);
  const auto sport = parse_port(parts[3]);
  const auto dport = parse_port(parts[4]);
  if (!src || !dst || !sport || !dport) return std::nullopt;
  src->port = *sport;
  dst->port = *dport;
  return addresses{*src, *dst};
}

decoded decode_v1(std::span<const std::byte> bytes) {
  const std::size_t window = std::min(bytes.size(), max_v1_length);
  const auto head = codec::as_text(bytes.first(window));
  const auto lf = head.find('\n');
  if (lf == std::string_view::npos) {
    if (bytes.size() >= max_v1_length) return invalid(version::v1, "v1 header without CRLF in its first 107 bytes");
    return need_more(version::v1);
  }
  if (lf == 0 || head[lf - 1] != '\r') return invalid(version::v1, "v1 header does not end with CRLF");
  const auto fields = head.substr(v1_signature.size(), lf - 1 - v1_signature.size());
  decoded d;
  d.status = decode_status::complete;
  d.ver = version::v1;
  d.length = lf + 1;
  // UNKNOWN: the receiver ignores the rest of the line and uses the real endpoints.
  if (fields == "UNKNOWN" || fields.starts_with("UNKNOWN ")) return d;
  const bool tcp4 = fields.starts_with("TCP4 "), tcp6 = fields.starts_with("TCP6 ");
  if (!tcp4 && !tcp6) return invalid(version::v1, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
  d.addr = parse_v1_addresses(fields, tcp6);
  if (!d.addr) return invalid(version::v1, "v1 addresses or ports malformed");
  return d;
}

ip_endpoint read_ip(codec::reader& r, bool v6) {
  ip_endpoint e;
  e.v6 = v6;
  const auto ip = r.take(v6 ? 16 : 4);
  std::transform(ip.begin(), ip.end(), e.ip.begin(), [](std::byte b) { return std::to_integer<std::uint8_t>(b); });
  return e;
}

// TLVs (type, 16-bit length, value) fill the rest of the header; we use none of them, but
// one that claims more bytes than the header holds makes the header invalid.
bool tlvs_fit(std::span<const std::byte> tlvs) {
  codec::reader r(tlvs);
  while (!r.empty()) {
    r.u8();
    r.prefixed<2>();
  }
  return !r.failed();
}

decoded decode_v2(std::span<const std::byte> bytes) {
  if (bytes.size() < v2::fixed_size) return need_more(version::v2);
  codec::reader fixed(bytes.first(v2::fixed_size).subspan(v2::signature.size()));
  const unsigned ver_cmd = fixed.u8(), fam = fixed.u8();
  if ((ver_cmd & 0xf0) != v2::version_nibble) return invalid(version::v2, "v2 header with a version other than 2");
  const unsigned command = ver_cmd & 0x0f, family = fam >> 4, transport = fam & 0x0f;
  if (command != v2::command_local && command != v2::command_proxy)
    return invalid(version::v2, "v2 command is neither LOCAL nor PROXY");
  if (family > v2::family_unix || transport > v2::transport_dgram)
    return invalid(version::v2, "v2 address family or transport unknown");
  const std::size_t body_len = fixed.u16();
  const std::size_t total = v2::fixed_size + body_len;
  if (total > max_v2_length) return invalid(version::v2, "v2 header longer than " + std::to_string(max_v2_length) + " bytes");
  if (bytes.size() < total) return need_more(version::v2);

  decoded d;
  d.status = decode_status::complete;
  d.ver = version::v2;
  d.length = total;
  const auto body = bytes.subspan(v2::fixed_size, body_len);
  // LOCAL (a health check by the proxy itself) and an unspecified family carry no client:
  // the receiver uses the connection's own endpoints and skips the rest.
  if (command == v2::command_local || family == v2::family_unspec) return d;
  if (transport != v2::transport_stream) return invalid(version::v2, "v2 header is not for a TCP (stream) connection");
  const std::size_t block = family == v2::family_inet    ? v2::inet_block
                            : family == v2::family_inet6 ? v2::inet6_block
                                                         : v2::unix_block;
  if (body.size() < block) return invalid(version::v2, "v2 address block shorter than its family needs");
  if (!tlvs_fit(body.subspan(block))) return invalid(version::v2, "v2 TLV runs past the end of the header");
  if (family == v2::family_unix) return d;  // a Unix client: no IP address to report
  const bool v6 = family == v2::family_inet6;
  codec::reader block_reader(body);  // holds the whole block: checked above
  addresses a;
  a.source = read_ip(block_reader, v6);
  a.destination = read_ip(block_reader, v6);
  a.source.port = block_reader.u16();
  a.destination.port = block_reader.u16();
  d.addr = a;
  return d;
}

}  // namespace

decoded decode(std::span<const std::byte> bytes) {
  if (bytes.empty()) return need_more(version::v1);
  if (matches_so_far(bytes, v1_signature)) return bytes.size() < v1_signature.size() ? need_more(version::v1) : decode_v1(bytes);
  if (matches_so_far(bytes, v2::signature)) return bytes.size() < v2::signature.size() ? need_more(version::v2) : decode_v2(bytes);
  return invalid(bytes.front() == std::byte{0x0D} ? version::v2 : version::v1,
                 "the connection does not start with a PROXY protocol header");
}

}  // namespace tunnel::proxy
