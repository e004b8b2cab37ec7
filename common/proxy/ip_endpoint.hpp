#pragma once
// An IP address and port as the PROXY protocol carries them: raw bytes, no resolver, no
// socket types, so the codec stays pure and fuzzable.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel::proxy {

struct ip_endpoint {
  bool v6 = false;
  std::array<std::uint8_t, 16> ip{};  // IPv4: the first 4 bytes, the rest zero
  std::uint16_t port = 0;

  // "192.0.2.1:80" or "[2001:db8::1]:443" (the form net::describe writes).
  std::string to_string() const;
  // The address alone: "192.0.2.1", "2001:db8::1".
  std::string ip_string() const;
  friend bool operator==(const ip_endpoint&, const ip_endpoint&) = default;
};

// Parses "a.b.c.d:port" or "[v6]:port" (port 0..65535, no leading zeros); nullopt for
// anything else, including host names and "unix:..." origins.
std::optional<ip_endpoint> parse_ip_endpoint(std::string_view text);

// Parses one literal of the given family (dotted quad / RFC 4291 text); nullopt otherwise.
std::optional<ip_endpoint> parse_ip(std::string_view text, bool v6);

// A decimal port 0..65535 without leading zeros ("0" itself is allowed).
std::optional<std::uint16_t> parse_port(std::string_view text);

// ::ffff:a.b.c.d as plain IPv4; anything else unchanged.
ip_endpoint unmapped(const ip_endpoint& e);
// IPv4 as ::ffff:a.b.c.d; IPv6 unchanged.
ip_endpoint mapped_v6(const ip_endpoint& e);

// An address range: "192.0.2.0/24", "2001:db8::/32", or one address (all its bits).
struct ip_prefix {
  ip_endpoint base;  // port unused; bits past `bits` zero
  int bits = 0;
  std::string to_string() const;
};
// Parses "ADDRESS[/BITS]" (IPv4 or IPv6 literal; BITS up to 32 or 128; bits set past
// the prefix are refused, so "10.0.0.1/8" is a mistake, not 10.0.0.0/8).
std::optional<ip_prefix> parse_ip_prefix(std::string_view text);
// Whether `e` is in `p` (an IPv4 range takes IPv4-mapped IPv6 clients as IPv4; an IPv6
// range takes IPv4 clients as IPv4-mapped).
bool contains(const ip_prefix& p, const ip_endpoint& e);

// Whether a connection can leave from this address (--transparent): not unspecified
// (0.0.0.0/8, ::, which bind() takes as "any of ours"), multicast or IPv4 broadcast.
bool usable_as_source(const ip_endpoint& e);
// Whether the address names the same host seen from another one: not loopback (127.0.0.0/8,
// ::1) or link-local (169.254.0.0/16, fe80::/10), which mean something else on each host.
bool meaningful_elsewhere(const ip_endpoint& e);

}  // namespace tunnel::proxy
