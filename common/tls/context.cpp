#include "tls/context.hpp"

// psa_util.h lacks extern "C" guards in mbedTLS 3.6.
extern "C" {
#include <mbedtls/psa_util.h>
}

#include <algorithm>
#include <stdexcept>

namespace tunnel::tls {
namespace {

// mbedTLS keeps pointers to these arrays: they must outlive every config (static storage).
// ChaCha20-Poly1305 first: it is the faster AEAD in mbedTLS on x86.
const int tls13_and_12_suites[] = {
    MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
    MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    0};

// Same order on both sides: the TLS 1.3 client sends one key share, a mismatch costs a
// HelloRetryRequest. P-256 must be present for TLS 1.2 with P-256 certificates.
const std::uint16_t groups[] = {MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
                                MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
                                MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1, 0};

void check(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string("TLS configuration failed: ") + what);
}

}  // namespace

tls_context::tls_context(tls_options options, std::shared_ptr<credentials> creds)
    : options_(std::move(options)), creds_(std::move(creds)) {
  mbedtls_ssl_config_init(&config_);
  const bool server = options_.side == role::server;
  check(mbedtls_ssl_config_defaults(&config_, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                    MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT),
        "defaults");
  mbedtls_ssl_conf_rng(&config_, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
  mbedtls_ssl_conf_min_tls_version(&config_, options_.min_version == version::tls1_2
                                                 ? MBEDTLS_SSL_VERSION_TLS1_2
                                                 : MBEDTLS_SSL_VERSION_TLS1_3);
  mbedtls_ssl_conf_max_tls_version(&config_, MBEDTLS_SSL_VERSION_TLS1_3);
  mbedtls_ssl_conf_ciphersuites(&config_, tls13_and_12_suites);
  mbedtls_ssl_conf_groups(&config_, groups);
  // Pure PSK modes have no forward secrecy; certificates use the ephemeral mode only.
  mbedtls_ssl_conf_tls13_key_exchange_modes(&config_, MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL);
  // Mutual authentication both ways (the server default would be NONE).
  mbedtls_ssl_conf_authmode(&config_, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&config_, creds_->ca(), nullptr);
  check(mbedtls_ssl_conf_own_cert(&config_, creds_->chain(), creds_->key()), "own certificate");
  mbedtls_ssl_conf_renegotiation(&config_, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  // No resumption: a resumed TLS 1.3 session in mbedTLS carries no client certificate,
  // so the peer identity (and with it authorization) would be lost.
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
  if (server) {
#if defined(MBEDTLS_SSL_PROTO_TLS1_3) && defined(MBEDTLS_SSL_SRV_C)
    mbedtls_ssl_conf_new_session_tickets(&config_, 0);
#endif
  } else {
    mbedtls_ssl_conf_session_tickets(&config_, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
  }
#endif
}

tls_context::~tls_context() { mbedtls_ssl_config_free(&config_); }

bool tls_context::admits(const policy::peer_identity& peer) const {
  if (options_.side == role::server) return options_.allow.allows(peer);
  if (options_.pins.empty()) return true;
  return std::find(options_.pins.begin(), options_.pins.end(), peer.spki) != options_.pins.end();
}

}  // namespace tunnel::tls
