#include "tls/dtls_record.hpp"

#include "codec/bytes.hpp"

namespace tunnel::tls {
namespace {

constexpr std::uint8_t type_change_cipher_spec = 20;
constexpr std::uint8_t type_alert = 21;
constexpr std::uint8_t type_handshake = 22;
constexpr std::uint8_t type_application_data = 23;
constexpr std::uint8_t type_tls12_cid = 25;
constexpr std::uint8_t handshake_client_hello = 1;
// A DTLS handshake message header: type(1) length(3) message_seq(2) fragment_offset(3)
// fragment_length(3).
constexpr std::size_t handshake_header_size = 12;

bool dtls_version(std::uint8_t major, std::uint8_t minor) {
  // DTLS 1.2 is {254, 253}; clients (OpenSSL among them) may write DTLS 1.0's {254, 255}
  // in the record carrying their first ClientHello.
  return major == 254 && (minor == 253 || minor == 255);
}

}  // namespace

record_view classify_record(std::span<const std::uint8_t> d, std::size_t cid_length) {
  record_view v;
  if (d.size() < record_header_size || !dtls_version(d[1], d[2])) return v;
  const std::uint8_t type = d[0];
  const auto epoch = codec::load_be<std::uint16_t>(d.data() + 3);
  if (type == type_tls12_cid) {
    // The header grows by the CID; the length field follows it. A record too short to
    // hold both cannot be ours.
    if (cid_length == 0 || d.size() < cid_offset + cid_length + 2) return v;
    v.kind = record_kind::cid;
    v.epoch = epoch;
    v.cid = d.subspan(cid_offset, cid_length);
    return v;
  }
  if (type != type_change_cipher_spec && type != type_alert && type != type_handshake &&
      type != type_application_data)
    return v;
  v.epoch = epoch;
  v.kind = record_kind::other;
  if (type == type_handshake && epoch == 0 && d.size() >= record_header_size + handshake_header_size &&
      d[record_header_size] == handshake_client_hello)
    v.kind = record_kind::client_hello;
  return v;
}

}  // namespace tunnel::tls
