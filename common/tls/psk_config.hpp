#pragma once
// The mbedTLS side of PSK mode: which suites and key exchanges a pre-shared key may use.
#include <mbedtls/ssl.h>

#include "tls/context.hpp"
#include "tls/psk_file.hpp"

namespace tunnel::tls {

// Configures `conf` (already given its defaults, transport and versions) for `psk` only:
// TLS 1.3 psk_dhe_ke (ECDHE with the key: forward secrecy; never psk_ke), the SHA-256
// suites an external TLS 1.3 PSK is bound to, ECDHE-PSK-CHACHA20-POLY1305 for TLS 1.2
// and DTLS 1.2. Both roles use the same call: mbedTLS's server matches the identity the
// client offers against the configured one and ignores any other.
// mbedTLS copies the key and identity. Returns 0 or an mbedTLS error code.
int configure_psk(mbedtls_ssl_config& conf, const psk_entry& psk, transport carrier, version min_version);

}  // namespace tunnel::tls
