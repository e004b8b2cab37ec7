#pragma once
// Who the peer is, as far as authorization cares: parsed once from its leaf certificate.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

struct mbedtls_x509_crt;

namespace tunnel::policy {

using spki_digest = std::array<std::uint8_t, 32>;  // SHA-256 of SubjectPublicKeyInfo DER

struct peer_identity {
  std::string cn;                 // subject common name ("" when absent)
  std::vector<std::string> dns;   // DNS SANs as written in the certificate
  std::vector<std::string> uri;   // URI SANs (SPIFFE IDs live here)
  std::vector<std::string> ip;    // IP SANs in canonical text form
  bool has_san = false;           // a subjectAltName extension of any kind (then the CN names nothing)
  spki_digest spki{};
  std::string psk;                // PSK mode: the pre-shared key's identity (no certificate)

  // "CN=x DNS=a,b URI=u IP=i" for logs; never includes key material.
  std::string describe() const;
};

// Extracts the identity from a parsed certificate. SAN entries that fail to parse are
// skipped (the chain verification has already judged the certificate itself).
peer_identity identity_of(const mbedtls_x509_crt& crt);

// Lowercase hex of a digest.
std::string to_hex(const spki_digest& d);

}  // namespace tunnel::policy
