#include "tls/psk_config.hpp"

namespace tunnel::tls {
namespace {

// Static storage: mbedTLS keeps the pointers. An external TLS 1.3 PSK is bound to one hash
// (SHA-256 by default in mbedTLS), so the SHA-384 suite could never be negotiated.
const int tls13_psk_suites[] = {MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256, MBEDTLS_TLS1_3_AES_128_GCM_SHA256, 0};
const int tls13_and_12_psk_suites[] = {MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256, MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
                                       MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, 0};
// DTLS 1.2: the only PSK suite with both an AEAD and an ephemeral key exchange.
const int dtls12_psk_suites[] = {MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, 0};

}  // namespace

int configure_psk(mbedtls_ssl_config& conf, const psk_entry& psk, transport carrier, version min_version) {
  if (carrier == transport::datagram) mbedtls_ssl_conf_ciphersuites(&conf, dtls12_psk_suites);
  else if (min_version == version::tls1_2) mbedtls_ssl_conf_ciphersuites(&conf, tls13_and_12_psk_suites);
  else mbedtls_ssl_conf_ciphersuites(&conf, tls13_psk_suites);
  // psk_dhe_ke only: pure psk_ke has no forward secrecy, and certificate-based ephemeral
  // mode must not be offered (there are no certificates to check).
  mbedtls_ssl_conf_tls13_key_exchange_modes(&conf, MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_EPHEMERAL);
  return mbedtls_ssl_conf_psk(&conf, psk.key.data(), psk.key.size(),
                              reinterpret_cast<const unsigned char*>(psk.identity.data()), psk.identity.size());
}

}  // namespace tunnel::tls
