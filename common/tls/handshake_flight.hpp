#pragma once
// Telling a resent DTLS handshake flight from a new one. mbedTLS answers every copy of the
// peer's last handshake record with its whole last flight again; a resent flight differs
// from the first only in its record sequence numbers. Pure.
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace tunnel::tls {

// A fingerprint of `datagrams` (one flight) that leaves out each record's sequence number:
// equal for a flight and its resend, different for another flight. 0 for no datagrams.
inline std::uint64_t flight_fingerprint(const std::vector<std::vector<unsigned char>>& datagrams) {
  if (datagrams.empty()) return 0;
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  const auto mix = [&h](unsigned char b) {
    h ^= b;
    h *= 1099511628211ull;
  };
  for (const auto& d : datagrams) {
    // DTLS 1.2 records: type (1), version (2), epoch (2), sequence number (6), length (2),
    // then the body. Everything is mixed in but the sequence numbers.
    std::size_t at = 0;
    while (at < d.size()) {
      if (at + 13 > d.size()) {  // not a whole header: take the rest as it is
        for (; at < d.size(); ++at) mix(d[at]);
        break;
      }
      for (std::size_t i = at; i < at + 5; ++i) mix(d[i]);
      mix(d[at + 11]);
      mix(d[at + 12]);
      const std::size_t end = std::min(d.size(), at + 13 + ((std::size_t{d[at + 11]} << 8) | d[at + 12]));
      for (std::size_t i = at + 13; i < end; ++i) mix(d[i]);
      at = end;
    }
    mix(0xff);  // datagram boundary
  }
  return h == 0 ? 1 : h;
}

}  // namespace tunnel::tls
