#pragma once
// What a TLS client asks for by ALPN, read from its first record before any TLS context is
// chosen. tunnel-out serves mux to clients that offer tunnel-mux/1 and plain TLS to every
// other client; mbedTLS has no ALPN selection callback and would refuse a client offering
// only protocols it does not list, so the choice is made here, from the raw ClientHello.
// Pure and bounded: every length is checked against what is there.
#include <cstddef>
#include <span>
#include <string_view>

namespace tunnel::tls {

enum class alpn_offer {
  need_more,  // the first record is not complete yet
  none,       // no ALPN extension, or not a ClientHello we can read (mbedTLS will judge it)
  includes,   // ALPN offered, including the wanted protocol
  excludes,   // ALPN offered, without the wanted protocol
};

// Looks at the first bytes of a connection (at least the first TLS record). `wanted` is
// the protocol to look for (mux::alpn_name). A ClientHello spread over several records
// reads as `none`.
alpn_offer offered_alpn(std::span<const std::byte> first_bytes, std::string_view wanted);

}  // namespace tunnel::tls
