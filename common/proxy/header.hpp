#pragma once
// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2) for TCP: a header a
// proxy sends before the relayed bytes, naming the original client (source) and the address
// the client connected to (destination), so the server behind the proxy sees who really
// connected. Pure: no I/O; every input is treated as hostile and bounded.
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "proxy/ip_endpoint.hpp"

namespace tunnel::proxy {

enum class version { v1 = 1, v2 = 2 };

struct addresses {
  ip_endpoint source;       // the original client
  ip_endpoint destination;  // where it connected to
  friend bool operator==(const addresses&, const addresses&) = default;
};

// v1 (text): "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" or TCP6; without addresses
// "PROXY UNKNOWN\r\n". v2 (binary): command PROXY, TCP over IPv4 or IPv6, no TLVs; without
// addresses command LOCAL (the receiver then uses the connection's own endpoints).
// A header has one family: IPv4-mapped IPv6 addresses are written as IPv4, and if the two
// addresses still differ in family both are written as IPv6 (IPv4-mapped).
std::vector<std::byte> encode(version v, const std::optional<addresses>& a);

// Upper bounds on what a receiver reads before deciding. v1: the specification's worst
// case, "PROXY UNKNOWN <v6> <v6> 65535 65535\r\n". v2: 16 bytes of fixed header plus at
// most 2 KiB of addresses and TLVs (load balancers send a few dozen bytes of TLVs; the
// format would allow 64 KiB).
constexpr std::size_t max_v1_length = 107;
constexpr std::size_t max_v2_length = 16 + 2048;
constexpr std::size_t max_header_length = max_v2_length;

enum class decode_status { need_more, complete, invalid };

struct decoded {
  decode_status status = decode_status::need_more;
  version ver = version::v1;      // need_more / complete: the version recognised so far
  std::size_t length = 0;         // complete: the header's size; what follows is payload
  std::optional<addresses> addr;  // complete: nullopt for v1 UNKNOWN, v2 LOCAL, and v2
                                  // headers whose family is unspecified or AF_UNIX
  std::string reason;             // invalid: a short phrase saying why
};

// Looks at the first bytes of a connection — everything received so far, any amount — and
// says whether they start with a complete v1 or v2 header (detected by their signatures),
// could still become one (need_more: read more, as long as fewer than max_header_length
// bytes have arrived), or cannot (invalid). Never reads past `bytes`; TLVs are skipped
// after checking that each lies within the header.
decoded decode(std::span<const std::byte> bytes);

}  // namespace tunnel::proxy
