#pragma once
// Reading just enough of a DTLS 1.2 record header to route a datagram that arrived on a
// shared, unconnected socket: to a session by connection ID (RFC 9146), or, for an
// epoch-0 ClientHello from an unknown address, to the cookie exchange. Pure functions over
// bytes; nothing here trusts the record or decrypts it.
#include <cstddef>
#include <cstdint>
#include <span>

namespace tunnel::tls {

enum class record_kind {
  invalid,       // too short, unknown content type or version: not DTLS, drop it
  cid,           // a tls12_cid record (content type 25): route by its connection ID
  client_hello,  // plaintext epoch-0 handshake record opening with a ClientHello
  other,         // any other well-formed DTLS record: route by source address
};

struct record_view {
  record_kind kind = record_kind::invalid;
  std::uint16_t epoch = 0;
  std::span<const std::uint8_t> cid;  // only for record_kind::cid; points into the datagram
};

// DTLS 1.2 record header without a CID: type(1) version(2) epoch(2) sequence(6) length(2).
inline constexpr std::size_t record_header_size = 13;
// The connection ID sits right after the sequence number in a tls12_cid record.
inline constexpr std::size_t cid_offset = 11;
// tunnel-out hands out 8-byte IDs: random, so unguessable and practically unique per flow.
inline constexpr std::size_t server_cid_length = 8;

// Classifies the first record of `datagram`. `cid_length` is the length of the IDs we
// hand out (every tls12_cid record addressed to us carries one of exactly that length).
// Never fails: anything unexpected is record_kind::invalid.
record_view classify_record(std::span<const std::uint8_t> datagram, std::size_t cid_length);

}  // namespace tunnel::tls
