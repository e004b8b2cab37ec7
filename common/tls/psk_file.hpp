#pragma once
// Pre-shared keys for devices without a PKI: a file of one line `identity:hexkey`.
// The key is a secret: it is never logged, and wiped from memory when dropped.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tunnel::tls {

// 16..48 bytes: below 128 bits a PSK is guessable offline from one recorded handshake;
// 48 bytes is mbedTLS's MBEDTLS_PSK_MAX_LEN (384 bits) in Debian's build.
constexpr std::size_t psk_min_bytes = 16;
constexpr std::size_t psk_max_bytes = 48;
// TLS allows 65535; a bound keeps log lines and ClientHellos small.
constexpr std::size_t psk_identity_max = 128;

struct psk_entry {
  std::string identity;             // printable ASCII, sent in clear in the ClientHello
  std::vector<unsigned char> key;   // the secret

  psk_entry() = default;
  psk_entry(const psk_entry&) = default;
  psk_entry& operator=(const psk_entry&) = default;
  psk_entry(psk_entry&&) = default;
  psk_entry& operator=(psk_entry&&) = default;
  ~psk_entry();  // zeroes the key
};

// Parses the text of a PSK file: exactly one non-empty line `identity:hexkey`, an optional
// trailing newline (LF or CRLF). Pure. On failure returns nullopt and sets `why` to a
// reason that never contains key material.
std::optional<psk_entry> parse_psk(std::string_view text, std::string& why);

// True when `mode` (st_mode) lets the group or others read the file: a shared secret
// readable by other users is no secret.
inline bool psk_mode_too_open(unsigned mode) { return (mode & 077) != 0; }

// Reads and parses `path` (at most 4 KiB). Refuses a file that is group/world readable or
// writable, unreadable, or malformed. Throws credential_error naming --psk-file and the file.
psk_entry load_psk_file(const std::string& path);

}  // namespace tunnel::tls
