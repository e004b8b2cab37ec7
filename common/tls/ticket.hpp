#pragma once
// Our TLS 1.3 session tickets: mbedTLS's serialized session plus who the peer proved to be,
// sealed with ChaCha20-Poly1305 under a key only this process knows. mbedTLS 3.6 keeps no
// certificate in a TLS 1.3 session, so without the identity in the ticket a resumed
// connection would not know its peer, and authorization would have nothing to check.
//
// Layout: version (1) | nonce (12) | ciphertext | tag (16), the version byte authenticated
// with the ciphertext, the plaintext being
//   authenticated_ms (8, steady clock: when the full handshake verified the peer) |
//   not_after (8, Unix seconds: the earliest end of validity in the peer's chain) |
//   identity length (2) | identity | mbedTLS session (the rest)
// and the identity: cn, then dns, uri and ip as a count (2) and strings, each string a
// length (2) and bytes, then the 32-byte SPKI digest. Big-endian throughout.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "policy/peer_identity.hpp"

namespace tunnel::tls {

using ticket_key = std::array<unsigned char, 32>;

struct ticket_contents {
  std::int64_t authenticated_ms = 0;  // steady_clock milliseconds of the full handshake
  std::int64_t not_after = 0;         // the peer's chain expires then: unusable after it
  policy::peer_identity peer;
  std::vector<unsigned char> session;  // mbedtls_ssl_session_save() output
};

// Seals `c` into `out` with a fresh random nonce. Returns the bytes written, 0 when `out` is
// too small or a string in the identity is longer than 65535 bytes.
std::size_t seal_ticket(const ticket_key& key, const ticket_contents& c, std::span<unsigned char> out);

// Opens a ticket sealed with `key`; nullopt when it is not one (wrong key, altered, truncated,
// malformed). Time is not judged here. `ticket` is hostile input until the tag verifies.
std::optional<ticket_contents> open_ticket(const ticket_key& key, std::span<const unsigned char> ticket);

}  // namespace tunnel::tls
