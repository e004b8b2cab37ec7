#pragma once
// Telling a resent DTLS handshake flight from a new one. mbedTLS answers every copy of the
// peer's last handshake record with its whole last flight again; a resent flight differs
// from the first only in its record sequence numbers (and so in the bytes of its encrypted
// records). Pure.
#include <algorithm>
#include <chrono>
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
      // An encrypted record (epoch above 0: the Finished) is encrypted afresh, under a new
      // record number, in every resend: its length counts, its bytes cannot.
      const bool encrypted = d[at + 3] != 0 || d[at + 4] != 0;
      if (!encrypted)
        for (std::size_t i = at + 13; i < end; ++i) mix(d[i]);
      at = end;
    }
    mix(0xff);  // datagram boundary
  }
  return h == 0 ? 1 : h;
}

// Holds back a flight that repeats the last one sent too soon. mbedTLS resends its whole
// last flight for every copy of the peer's last handshake record, and anyone on the path
// can copy (or, before the keys, forge) one: each copy would make us send a whole flight,
// certificate chain included, at the peer. A real peer asks again only after its
// retransmission timer (1 s and up), and mbedTLS's own timer resends no sooner either; the
// same flight again within half a second is not sent.
class flight_guard {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds resend_interval{500};

  // False (the caller drops the flight) when `datagrams` repeat the last flight sent
  // within the interval; else true, and they are the last flight sent from now.
  bool allow(const std::vector<std::vector<unsigned char>>& datagrams, clock::time_point now = clock::now()) {
    const std::uint64_t flight = flight_fingerprint(datagrams);
    if (flight == last_ && now - last_at_ < resend_interval) return false;
    last_ = flight;
    last_at_ = now;
    return true;
  }

 private:
  std::uint64_t last_ = 0;
  clock::time_point last_at_{};
};

}  // namespace tunnel::tls
