#include "proxy/ip_endpoint.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace tunnel::proxy {
namespace {

constexpr std::array<std::uint8_t, 12> v4_mapped_prefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_v4_mapped(const ip_endpoint& e) {
  return e.v6 && std::equal(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), e.ip.begin());
}

// Bit `i` of an address, counting from the most significant.
bool bit(const std::array<std::uint8_t, 16>& ip, int i) {
  return (ip[static_cast<std::size_t>(i / 8)] & (0x80 >> (i % 8))) != 0;
}

}  // namespace

std::string ip_endpoint::ip_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(v6 ? AF_INET6 : AF_INET, ip.data(), text, sizeof text);
  return text;
}

std::string ip_endpoint::to_string() const {
  // Appended piece by piece: GCC 12 at -O3 reports a false -Wrestrict on "[" + string.
  std::string out = v6 ? "[" : "";
  out += ip_string();
  out += v6 ? "]:" : ":";
  out += std::to_string(port);
  return out;
}

std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  if (text.size() > 1 && text.front() == '0') return std::nullopt;  // no leading zeros
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

std::optional<ip_endpoint> parse_ip(std::string_view text, bool v6) {
  // inet_pton wants a terminated string; anything longer than the longest literal is not one.
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  if (text.find('\0') != std::string_view::npos) return std::nullopt;  // inet_pton would stop there
  const std::string terminated(text);
  ip_endpoint out;
  out.v6 = v6;
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, terminated.c_str(), out.ip.data()) != 1) return std::nullopt;
  return out;
}

std::optional<ip_endpoint> parse_ip_endpoint(std::string_view text) {
  std::string_view host, port;
  bool v6 = false;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    v6 = true;
  } else {
    const auto colon = text.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto out = parse_ip(host, v6);
  const auto p = parse_port(port);
  if (!out || !p) return std::nullopt;
  out->port = *p;
  return out;
}

ip_endpoint unmapped(const ip_endpoint& e) {
  if (!is_v4_mapped(e)) return e;
  ip_endpoint out;
  std::copy_n(e.ip.begin() + 12, 4, out.ip.begin());
  out.port = e.port;
  return out;
}

std::optional<ip_prefix> parse_ip_prefix(std::string_view text) {
  const auto slash = text.find('/');
  const std::string_view host = text.substr(0, slash);
  const bool v6 = host.find(':') != std::string_view::npos;
  auto base = parse_ip(host, v6);
  if (!base) return std::nullopt;
  const int width = v6 ? 128 : 32;
  int bits = width;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string_view::npos ||
        (digits.size() > 1 && digits[0] == '0'))
      return std::nullopt;
    bits = std::stoi(std::string(digits));
    if (bits > width) return std::nullopt;
  }
  for (int i = bits; i < width; ++i)  // host bits set: a typo for another range
    if (bit(base->ip, i)) return std::nullopt;
  base->port = 0;
  return ip_prefix{*base, bits};
}

bool contains(const ip_prefix& p, const ip_endpoint& e) {
  // An IPv6 range sees an IPv4 client as ::ffff:a.b.c.d (so ::/0 and ::ffff:10.0.0.0/104
  // mean what they say); an IPv4 range sees an IPv4-mapped client as IPv4.
  const ip_endpoint a = p.base.v6 ? mapped_v6(e) : unmapped(e);
  if (a.v6 != p.base.v6) return false;
  for (int i = 0; i < p.bits; ++i)
    if (bit(a.ip, i) != bit(p.base.ip, i)) return false;
  return true;
}

std::string ip_prefix::to_string() const { return base.ip_string() + "/" + std::to_string(bits); }

bool usable_as_source(const ip_endpoint& e) {
  const ip_endpoint a = unmapped(e);
  if (!a.v6) {
    const auto first = a.ip[0];
    const bool broadcast = a.ip[0] == 255 && a.ip[1] == 255 && a.ip[2] == 255 && a.ip[3] == 255;
    return first != 0 && (first & 0xf0) != 0xe0 && !broadcast;
  }
  const bool unspecified = std::all_of(a.ip.begin(), a.ip.end(), [](std::uint8_t b) { return b == 0; });
  return !unspecified && a.ip[0] != 0xff;
}

bool meaningful_elsewhere(const ip_endpoint& e) {
  const ip_endpoint a = unmapped(e);
  if (!a.v6) return a.ip[0] != 127 && !(a.ip[0] == 169 && a.ip[1] == 254);
  const bool loopback = std::all_of(a.ip.begin(), a.ip.end() - 1, [](std::uint8_t b) { return b == 0; }) && a.ip[15] == 1;
  const bool link_local = a.ip[0] == 0xfe && (a.ip[1] & 0xc0) == 0x80;
  return !loopback && !link_local;
}

ip_endpoint mapped_v6(const ip_endpoint& e) {
  if (e.v6) return e;
  ip_endpoint out;
  out.v6 = true;
  std::copy(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), out.ip.begin());
  std::copy_n(e.ip.begin(), 4, out.ip.begin() + 12);
  out.port = e.port;
  return out;
}

}  // namespace tunnel::proxy
